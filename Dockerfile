# syntax=docker/dockerfile:1
# The sluice binary on a slim runtime image, running as a non-root user.
#   docker build -t sluice .
#   docker run --rm -v "$PWD/examples:/data" sluice run /data/quickstart.toml --out /tmp/out
# The trainer's CUDA build is Dockerfile.cuda.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked --bin sluice \
 && strip target/release/sluice

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /home/sluice sluice
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
# Data the stages read by path: rules (templates, filler words, PII, quality, business rules),
# sensitive-word lists, and the examples with their small data.
COPY rules/ /opt/sluice/rules/
COPY sensitive_words/ /opt/sluice/sensitive_words/
COPY examples/ /opt/sluice/examples/
ENV SLUICE_CACHE=/tmp/sluice-cache
WORKDIR /home/sluice
USER 10001
ENTRYPOINT ["sluice"]
CMD ["--help"]
