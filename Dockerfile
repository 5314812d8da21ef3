# flink-probe container image: the daemon in a venv on python:3.11-slim, as a non-root user.
#
#   docker build -t flink-probe .
#   docker run -p 9270:9270 -v flink-probe-state:/var/lib/flink-probe flink-probe
#
# Configuration: with nothing set it is the sidecar default (discover every job of the
# JobManager at http://127.0.0.1:8081, e.g. in the same Kubernetes pod). Otherwise mount a file
# and name it, or set FLINK_PROBE_<SECTION>__<KEY> variables (README, "Configuration"):
#   docker run -v ./config.yaml:/etc/flink-probe/config.yaml:ro \
#     -e FLINK_PROBE_CONFIG=/etc/flink-probe/config.yaml flink-probe
#   docker run -e FLINK_PROBE_TARGETS='[{"name":"prod","url":"http://jm:8081","discover":true}]' \
#     flink-probe
# Other commands: docker run --rm flink-probe check-config
#
# Another base: any Debian-like image with python3 (>= 3.11) and its venv module, such as the
# debootstrapped Debian bookworm that .ci/image builds where Docker Hub is out of reach:
#   docker build --build-arg BASE_IMAGE=localhost/debian-python:bookworm -t flink-probe .
ARG BASE_IMAGE=python:3.11-slim

# --- stage 1: wheels --------------------------------------------------------------------
FROM ${BASE_IMAGE} AS build
# pip runs in a venv of its own: a distribution's python3 may have no pip, or refuse to let
# pip touch it (PEP 668, "externally managed").
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/build-venv/bin:$PATH
RUN python3 -m venv /build-venv
WORKDIR /src

# The dependencies first, from pyproject.toml alone: this layer is rebuilt only when they change.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > requirements.txt \
    && pip wheel --wheel-dir /wheels/dependencies --requirement requirements.txt

COPY README.md ./
COPY probe ./probe
RUN pip wheel --no-deps --wheel-dir /wheels/app .

# --- stage 2: runtime -------------------------------------------------------------------
FROM ${BASE_IMAGE}
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/flink-probe/bin:$PATH \
    STATE_DIRECTORY=/var/lib/flink-probe

RUN useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /var/lib/flink-probe --shell /usr/sbin/nologin flink-probe \
    && install -d -o flink-probe -g flink-probe -m 0700 /var/lib/flink-probe

COPY --from=build /wheels/dependencies /wheels/dependencies
RUN python3 -m venv /opt/flink-probe \
    && /opt/flink-probe/bin/pip install --no-index --find-links /wheels/dependencies \
        /wheels/dependencies/*.whl \
    && rm -rf /wheels

COPY --from=build /wheels/app /wheels/app
RUN /opt/flink-probe/bin/pip install --no-index --no-deps /wheels/app/*.whl \
    && rm -rf /wheels

USER 10001:10001
WORKDIR /var/lib/flink-probe
# The SQLite state (state.path is relative: it lies in $STATE_DIRECTORY).
VOLUME /var/lib/flink-probe
EXPOSE 9270

# Alive while the probe loop runs. Finds the port as the daemon does (FLINK_PROBE_SERVER__LISTEN,
# else server.listen of the file in FLINK_PROBE_CONFIG, else 9270) without importing the
# daemon, so a check every 30 s costs little CPU; there is no curl in the slim image. It asks
# over plain HTTP: with TLS (server.web_config) override it with an https:// URL.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request, yaml; f = os.environ.get('FLINK_PROBE_CONFIG'); c = (yaml.safe_load(open(f)) if f else None) or {}; listen = os.environ.get('FLINK_PROBE_SERVER__LISTEN') or (c.get('server') or {}).get('listen') or '0.0.0.0:9270'; host, _, port = listen.rpartition(':'); host = {'0.0.0.0': '127.0.0.1', '[::]': '[::1]'}.get(host, host); urllib.request.urlopen(f'http://{host}:{port}/healthz', timeout=4)"]

# SIGTERM: probe rounds in flight finish, the state is committed, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["flink-probe"]
CMD ["run"]
