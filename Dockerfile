# syntax=docker/dockerfile:1
# heron in a container (docs/deployment.md, "Containers"):
#
#   docker build -t heron .
#   docker run --rm -p 8000:8000 heron                                   # the welcome page
#   docker run --rm -p 8000:8000 -e HERON_APP=myproject.asgi:application heron
#
# Settings come from HERON_* environment variables (docs/settings.md), or as
# flags after the image name; for your own app, build FROM this image (see the
# guide). tests/test_deployment_docs.py runs this file's command and HEALTHCHECK.

ARG PYTHON_VERSION=3.12

# --- build: heron and its dependencies in a virtual environment, with the
# optional C speedups compiled (the runtime image has no compiler) ---------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/heron
WORKDIR /src
COPY . .
RUN /opt/heron/bin/pip install --no-cache-dir .

# --- runtime ---------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm
# a numeric, non-root user: Kubernetes' runAsNonRoot can only verify a number
RUN groupadd --system --gid 10001 heron \
 && useradd --system --uid 10001 --gid heron --home-dir /app --shell /usr/sbin/nologin heron \
 && install -d -o heron -g heron /app
COPY --from=build /opt/heron /opt/heron
ENV PATH=/opt/heron/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HERON_FORWARDED_ALLOW_IPS="127.0.0.1,::1" \
    HERON_METRICS_BIND=0.0.0.0:9100
# HERON_FORWARDED_ALLOW_IPS: the peers whose X-Forwarded-For/-Proto (and PROXY
# protocol header, with --proxy-protocol) heron believes. The default trusts
# nothing outside the container; set it to your load balancer's network, e.g.
# -e HERON_FORWARDED_ALLOW_IPS=10.244.0.0/16.
# HERON_METRICS_BIND: /livez, /readyz (probes) and /metrics; publish 8000, not 9100.
# The app: HERON_APP=module:attribute, or as the first argument after the image
# name; without one heron serves its welcome page. Workers: WEB_CONCURRENCY.
WORKDIR /app
USER 10001:10001
EXPOSE 8000 9100
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('HERON_METRICS_BIND', ':9100').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/livez', timeout=2)"]
# exec form: heron is PID 1 and gets SIGTERM itself (no shell in between)
ENTRYPOINT ["python", "-m", "heron", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
CMD []
