# syntax=docker/dockerfile:1
# Build both binaries once; run chima or faseng from the same runtime image.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p chima -p faseng \
 && install -D target/release/chima /out/chima \
 && install -D target/release/faseng /out/faseng

FROM debian:bookworm-slim AS runtime
# git: checkouts; openssh-client: fabric and capistrano over ssh; fabric, capistrano: providers;
# bubblewrap: the provider sandbox.
# `deploy` runs chima; faseng runs as root (compose says so) and runs every provider as the
# unprivileged `faseng-run`, which owns nothing but the run directory it is handed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git openssh-client fabric capistrano bubblewrap tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 deploy \
 && useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin --uid 10002 faseng-run
COPY --from=build /out/chima /out/faseng /usr/local/bin/
COPY app.json /app/app.json
COPY deploy-config /app/deploy-config
WORKDIR /app
RUN mkdir -p /app/.faseng && chown -R deploy /app
USER deploy
ENV CHIMA_APPS_JSON=/app/app.json \
    FASENG_APPS_JSON=/app/app.json \
    FASENG_PROVIDER_USER=faseng-run \
    DEPLOY_CONFIG_DIR=/app/deploy-config \
    FASENG_WORKDIR=/app/.faseng/work
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["faseng", "serve"]
