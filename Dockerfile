# syntax=docker/dockerfile:1
# The dicom-adapter images, one Dockerfile, three targets:
#   docker build -t dicom-adapter .                          # both: IMAGE import|export FLAGS...
#   docker build --target import -t dicom-import-adapter .   # runs `dicom-adapter import`
#   docker build --target export -t dicom-export-adapter .   # runs `dicom-adapter export`
# The import and export targets are drop-ins for the reference adapter's two images: their
# container args are the flags alone (`--dimse_aet=IMPORTADAPTER --dimse_port=2575
# --dicomweb_address=...`). A build stage makes a virtualenv with the package and its
# dependencies; the runtime stage copies only that virtualenv onto a slim Python base and runs as
# a non-root user.
#
# PYTHON_IMAGE: any Debian-based image with Python 3.11+ as `python` and its venv module
# (scripts/container-check uses a debootstrap bookworm root). PIP_INSTALL_ARGS: extra pip
# arguments, e.g. `--no-index --find-links=/wheels` with wheels built beforehand and mounted
# at build time (`podman build -v "$PWD/wheels:/wheels:ro"`) where no package index is reachable.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG PIP_INSTALL_ARGS=""
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
# hadolint ignore=SC2086
RUN /opt/venv/bin/pip install --no-cache-dir ${PIP_INSTALL_ARGS} ".[codecs]" \
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

# The reference import image's drop-in: the container args are the import adapter's flags.
FROM runtime AS import
ENTRYPOINT ["dicom-adapter", "import"]
CMD ["--help"]

# The reference export image's drop-in: the container args are the export adapter's flags.
FROM runtime AS export
ENTRYPOINT ["dicom-adapter", "export"]
CMD ["--help"]

# The default target (last stage): both adapters, the subcommand first (the Helm chart's image).
FROM runtime AS dicom-adapter
