# Logbook in a container: `docker build -t logbook .` then
#   docker run -p 4700:4700 -v logbook-data:/data logbook
# The admin credential generated on first start is in the volume (admin-credentials.json)
# and printed once in the log. Mount a configuration at /etc/logbook/logbook.toml and set
# LOGBOOK_CONFIG=/etc/logbook/logbook.toml to use one.

# --- build ---------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# No .git in the build context: pass the commit for `logbook --version`
# (docker build --build-arg LOGBOOK_COMMIT=$(git rev-parse --short=12 HEAD) .).
ARG LOGBOOK_COMMIT=unknown
ENV LOGBOOK_COMMIT=${LOGBOOK_COMMIT}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin logbook \
 && cp target/release/logbook /logbook

# --- run -----------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 logbook \
 && useradd --system --uid 10001 --gid logbook --home-dir /data --shell /usr/sbin/nologin logbook \
 && mkdir -p /data && chown logbook:logbook /data
COPY --from=build /logbook /usr/local/bin/logbook
USER logbook:logbook
VOLUME ["/data"]
ENV LOGBOOK_DATA_DIR=/data \
    LOGBOOK_LISTEN=0.0.0.0:4700 \
    LOGBOOK_URL=http://127.0.0.1:4700
EXPOSE 4700
# `logbook status` exits non-zero unless /healthz says ok (journal writable, disk not full,
# within the journal budget).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/logbook", "status"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/logbook"]
CMD ["serve"]
