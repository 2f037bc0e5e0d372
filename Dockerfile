# One image per binary, as the CDK app in infra/cdk deploys them (ECR repository
# orderpipe/<binary>, the task passing only the subcommand):
#
#   docker build --build-arg BIN=flows -t orderpipe/flows:$TAG .
#
# BIN is one of command-api, relay, projectors, flows, dashboard, replay. The entrypoint is the
# binary itself; ECS health checks call `curl` on the loopback admin port, so the runtime image
# ships it.

ARG RUST_VERSION=1.88

FROM rust:${RUST_VERSION}-slim-bookworm AS build
ARG BIN
RUN test -n "$BIN" || (echo "--build-arg BIN=<binary> is required" >&2; exit 1)
WORKDIR /src
COPY . .
# --locked: the image is built from exactly the dependency versions in Cargo.lock. The cache
# mounts keep the registry and target directory between builds of the six binaries.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin "$BIN" \
    && install -D "target/release/$BIN" "/out/$BIN"

FROM debian:bookworm-slim
ARG BIN
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home orderpipe
COPY --from=build /out/$BIN /usr/local/bin/$BIN
# Exec form cannot expand BIN, so the binary is also reachable under a fixed name.
RUN ln -s "/usr/local/bin/$BIN" /usr/local/bin/orderpipe-entrypoint
USER 10001
ENTRYPOINT ["/usr/local/bin/orderpipe-entrypoint"]
