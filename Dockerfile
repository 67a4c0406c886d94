# syntax=docker/dockerfile:1
# The dicom-adapter image: `docker build -t dicom-adapter .`
#   docker run --rm dicom-adapter import --help
# Two stages: a build stage makes a virtualenv with the package and its dependencies; the runtime
# stage copies only that virtualenv onto a slim Python base and runs as a non-root user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY common ./common
COPY import_adapter ./import_adapter
COPY export_adapter ./export_adapter
# The codecs extra lets the export adapter convert transfer syntaxes a peer does not accept.
RUN /opt/venv/bin/pip install --no-cache-dir ".[codecs]" \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="dicom-adapter" \
      org.opencontainers.image.description="DIMSE <-> DICOMweb adapter for the Cloud Healthcare API" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 adapter \
    && useradd --system --uid 10001 --gid adapter --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin adapter \
    && mkdir -p /var/spool/dicom-adapter \
    && chown adapter:adapter /var/spool/dicom-adapter
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp
WORKDIR /var/spool/dicom-adapter
USER 10001:10001
# 2575: DIMSE (import adapter); 8080: /metrics, /healthz, /readyz (--metrics_port).
EXPOSE 2575 8080
ENTRYPOINT ["dicom-adapter"]
CMD ["--help"]
