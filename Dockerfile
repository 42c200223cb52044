# keel in a multi-stage image (Swift 6.2 or later: hummingbird needs it): build with the toolchain, run on slim Debian with the three
# C libraries keel links (rabbitmq-c, libcurl, SQLite).
FROM swift:6.2-bookworm AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        librabbitmq-dev libcurl4-openssl-dev libsqlite3-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The manifest names every target, tests included, so all of them are copied.
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --product keel --static-swift-stdlib \
    && install -D "$(swift build -c release --show-bin-path)/keel" /out/keel

FROM debian:bookworm-slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        librabbitmq4 libcurl4 libsqlite3-0 ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/keel --create-home keel
COPY --from=build /out/keel /usr/local/bin/keel
USER keel
WORKDIR /var/lib/keel
ENTRYPOINT ["keel"]
CMD ["--help"]
