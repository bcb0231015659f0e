# The `meridian` image: one binary, every role (`meridian edge --config F`,
# `meridian origin --config F`, `meridian psp ...`); the chart picks the
# role with the container's arguments.
#
# Build: docker build -t meridian:dev .   (nothing here builds images: this
# machine has no container engine; `.ci/test` lints this file with hadolint.)
#
# Runtime contract, kept in step with the chart:
# - runs as uid/gid 65532 (non-root), with a read-only root filesystem;
# - writes only under /var/lib/meridian (the edge's `modes.state_file`),
#   declared as a volume; configs and secrets are mounted read-only
#   under /etc/meridian;
# - ports: origin 8080 (public) and 8081 (internal: admin API, /metrics,
#   /readyz); edge 8000 (public), 8443 (TLS) and 9000 (admin).

FROM rust:1.95-slim-bookworm AS build
# cmake and a C toolchain build pingora's and aws-lc's C parts.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake pkg-config build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p meridian-cli --bin meridian \
    && cp target/release/meridian /meridian

# glibc and libgcc are all the binary links (rustls, no OpenSSL).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /meridian /usr/local/bin/meridian
USER 65532:65532
WORKDIR /var/lib/meridian
VOLUME ["/var/lib/meridian"]
EXPOSE 8000 8443 9000 8080 8081
ENTRYPOINT ["/usr/local/bin/meridian"]
CMD ["--help"]
