# Image of the slawatch exporter. docker-compose.yml builds it as
# slawatch:local; alone:
#   docker build -t slawatch .
#   docker run --rm -p 9115:9115 slawatch
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# .dockerignore keeps the git history, tests, virtualenvs and
# alertmanager/secrets/ out of the build context.
WORKDIR /src
COPY . .
RUN pip install . \
    && mkdir -p /var/lib/slawatch \
    && chown nobody:nogroup /var/lib/slawatch

# The ticket database (tickets.database, default slawatch-tickets.db) is
# opened relative to this directory, the only one user nobody can write.
WORKDIR /var/lib/slawatch
USER nobody

EXPOSE 9115
ENTRYPOINT ["slawatch"]
# Listens on all interfaces (:9115) with the embedded default config.
CMD ["serve"]
