# The classic builder (DOCKER_BUILDKIT=0): every rebuild leaves the previous image dangling.
FROM pmr-workload:latest
ARG BUILD=0
RUN dd if=/dev/zero of=/app.bin bs=1M count=60 2>/dev/null && echo "$BUILD" > /build-id
