# officer in a container: built with the official Rust image, run as an unprivileged user.
#
#   docker build -t officer .
#   docker run -d -p 11500:11500 -v officer-state:/var/lib/officer officer
#
# The fencing-token state file lives in the volume /var/lib/officer: keep the volume across
# container upgrades, or tokens restart from scratch (README, "Fencing tokens").

# --- build: any current stable toolchain (Cargo.toml's rust-version is the floor) ---
FROM rust:1-bookworm AS build
WORKDIR /src
# The whole context (.dockerignore leaves out target/ and .git): Cargo.toml names the bench
# target by path, so the manifest alone would not load for a separate `cargo fetch` layer.
COPY . .
RUN cargo build --release --locked --bin officer \
 && install -D -m 0755 target/release/officer /out/officer

# --- run: the same Debian release as the build image, so the binary's glibc matches ---
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/officer \
        --shell /usr/sbin/nologin officer \
 && install -d -o officer -g officer -m 0700 /var/lib/officer
COPY --from=build /out/officer /usr/local/bin/officer
USER officer:officer
# Declared after the directory exists with its owner, so a fresh named volume is created
# owned by officer (Docker copies the image's directory, owner and mode into it).
VOLUME ["/var/lib/officer"]
EXPOSE 11500
# The server stops gracefully on SIGTERM (docker stop): clients get SHUTDOWN, locks released.
STOPSIGNAL SIGTERM
ENTRYPOINT ["officer"]
# Arguments after the image name replace this (start them with `run`). 0.0.0.0 because the
# container's own network is private; publish the port only where clients should reach it,
# and add --auth-file (a mounted secret) on any shared network.
CMD ["run", "-h", "0.0.0.0", "-p", "11500", "--state-file", "/var/lib/officer/officer.state"]
