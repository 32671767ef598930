//! `officer release --force NAME` and `officer kick CONN`: an operator's forced release and
//! close (PROTOCOL.md §6.12). Rights come from the admin secret (`--admin-file`) or from being
//! the server's own user on its UNIX socket; the server logs who did it.

use std::path::Path;

use super::{shown_name, KickArgs, ReleaseArgs};
use crate::client::Client;

pub(super) fn release(args: ReleaseArgs) -> i32 {
    let (client, _) = match args.connect.connect_for_name(&args.name) {
        Ok(found) => found,
        Err(code) => return code,
    };
    if let Err(code) = present_secret(&client, args.admin_file.as_deref()) {
        return code;
    }
    match client.revoke(&args.name, args.token) {
        Ok(count) => {
            let grants = if count == 1 { "grant" } else { "grants" };
            println!("revoked {count} {grants} of lock {}", shown_name(&args.name));
            0
        }
        Err(e) => super::report(&e),
    }
}

pub(super) fn kick(args: KickArgs) -> i32 {
    let client = match args.connect.connect_or_exit() {
        Ok(client) => client,
        Err(code) => return code,
    };
    if let Err(code) = present_secret(&client, args.admin_file.as_deref()) {
        return code;
    }
    match client.kick(args.connection) {
        Ok(()) => {
            println!("closed connection {}", args.connection);
            0
        }
        Err(e) => super::report(&e),
    }
}

/// ADMIN_AUTH with the secret in `path`, when one is given.
fn present_secret(client: &Client, path: Option<&Path>) -> Result<(), i32> {
    let Some(path) = path else { return Ok(()) };
    let secret = super::client_secret(path).map_err(|(code, message)| {
        eprintln!("officer: {}", message.replace("--auth-file", "--admin-file"));
        code
    })?;
    client.admin_auth(&secret).map_err(|e| super::report(&e))
}
