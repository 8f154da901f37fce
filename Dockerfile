# Multi-stage build of the `sluice` binary.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin sluice

FROM debian:bookworm-slim
RUN useradd --create-home --uid 10001 sluice
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
COPY --from=build /src/rules /opt/sluice/rules
COPY --from=build /src/sensitive_words /opt/sluice/sensitive_words
COPY --from=build /src/examples /opt/sluice/examples
USER sluice
WORKDIR /work
ENTRYPOINT ["sluice"]
CMD ["--help"]
