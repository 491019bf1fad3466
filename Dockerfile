# Levee's container image: a Swift build stage and a small Debian runtime.
#   docker build -t levee:local .
#   docker run --rm levee:local doctor
# The Swift runtime is linked statically (--static-swift-stdlib), so the runtime stage needs
# only librdkafka and the C libraries Foundation's networking and XML parts load (libcurl, libxml2).
ARG SWIFT_VERSION=6.2
ARG DEBIAN_RELEASE=bookworm

FROM swift:${SWIFT_VERSION}-${DEBIAN_RELEASE} AS build
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends librdkafka-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the build reads: SwiftPM checks that every target's folder exists, tests included.
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --product levee --static-swift-stdlib \
 && install -D -m 0755 "$(swift build -c release --show-bin-path)/levee" /out/levee

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      librdkafka1 libcurl4 libxml2 ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 levee \
 && useradd --system --uid 10001 --gid levee --home-dir /var/lib/levee --create-home --shell /usr/sbin/nologin levee
COPY --from=build /out/levee /usr/local/bin/levee
COPY deploy/docker/levee-probe /usr/local/bin/levee-probe
USER 10001:10001
WORKDIR /var/lib/levee
ENV LEVEE_HTTP=0.0.0.0:9090
EXPOSE 9090
# `levee worker` drains on SIGTERM; it is PID 1 here, so it receives the signal directly.
STOPSIGNAL SIGTERM
ENTRYPOINT ["levee"]
CMD ["--help"]
