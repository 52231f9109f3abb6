# unboxd in a container. Build: docker build -t unboxd .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Queries compile against the committed .sqlx data; no database is needed to build.
ENV SQLX_OFFLINE=true
RUN cargo build --release --locked -p unbox-server --bin unboxd

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/unbox --create-home unbox
COPY --from=build /src/target/release/unboxd /usr/local/bin/unboxd
USER unbox
WORKDIR /var/lib/unbox
ENV UNBOX_LISTEN=0.0.0.0:8080 \
    UNBOX_DATA_DIR=/var/lib/unbox/data
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/unboxd"]
CMD ["serve"]
