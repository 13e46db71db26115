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
# git: checkouts; openssh-client: fabric and capistrano over ssh; fabric, capistrano: providers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git openssh-client fabric capistrano tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 deploy
COPY --from=build /out/chima /out/faseng /usr/local/bin/
COPY app.json /app/app.json
COPY deploy-config /app/deploy-config
WORKDIR /app
RUN mkdir -p /app/.faseng && chown -R deploy /app
USER deploy
ENV CHIMA_APPS_JSON=/app/app.json \
    DEPLOY_CONFIG_DIR=/app/deploy-config \
    FASENG_WORKDIR=/app/.faseng/work
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["faseng", "serve"]
