//! Argument parsing of the client subcommands, inside a top level shaped like the binary's
//! (help flag off, a global `--help`), so clash of `-h` and help would show up here.

use clap::{CommandFactory, Parser, Subcommand};
use std::time::Duration;

use super::*;

#[derive(Parser, Debug)]
#[command(name = "officer", disable_help_flag = true, disable_help_subcommand = true)]
struct Cli {
    #[arg(long, action = clap::ArgAction::Help, global = true, help = "Print help")]
    help: Option<bool>,
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand, Debug)]
enum Top {
    #[command(flatten)]
    Client(ClientCommand),
}

fn parse(args: &[&str]) -> ClientCommand {
    let Top::Client(cmd) = Cli::try_parse_from(args).expect("parses").command;
    cmd
}

#[test]
fn the_command_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn session_grace_takes_seconds_with_or_without_a_unit() {
    for (given, grace) in [("10", 10_000), ("10s", 10_000), ("2.5s", 2_500), ("500ms", 500), ("0.5", 500)] {
        let ClientCommand::Lock(args) =
            parse(&["officer", "lock", "--session-grace", given, "n", "--", "true"])
        else {
            panic!("not lock");
        };
        assert_eq!(args.session_grace, Some(Duration::from_millis(grace)), "{given}");
    }
    for bad in ["10m", "s", "-1", "ten"] {
        assert!(
            Cli::try_parse_from(["officer", "lock", "--session-grace", bad, "n", "--", "true"]).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn skip_while_detached_needs_a_session_grace_and_reaches_the_lock_options() {
    let ClientCommand::Lock(args) =
        parse(&["officer", "lock", "--session-grace", "5s", "--skip-while-detached", "n", "--", "true"])
    else {
        panic!("not lock");
    };
    assert!(args.skip_while_detached);
    assert!(super::lock::lock_options(&args).skip_while_detached);
    let alone = ["officer", "lock", "--skip-while-detached", "n", "--", "true"];
    assert!(Cli::try_parse_from(alone).is_err(), "without --session-grace it means nothing");
}

#[test]
fn lock_takes_flock_style_options_and_the_command() {
    let ClientCommand::Lock(args) = parse(&[
        "officer",
        "lock",
        "deploy",
        "-w",
        "1.5",
        "-E",
        "9",
        "--queue-max",
        "3",
        "--",
        "sh",
        "-c",
        "exit 3",
    ]) else {
        panic!("not lock");
    };
    assert_eq!(args.name, "deploy");
    assert_eq!(args.timeout, Some(Duration::from_millis(1500)));
    assert_eq!((args.conflict_exit_code, args.queue_max), (9, Some(3)));
    assert_eq!(args.command, ["sh", "-c", "exit 3"]);
    assert!(!args.nonblock && !args.kill_on_loss);
}

#[test]
fn lock_command_may_follow_without_double_dash() {
    let ClientCommand::Lock(args) = parse(&["officer", "lock", "-n", "x", "ls", "-l"]) else {
        panic!("not lock")
    };
    assert!(args.nonblock);
    assert_eq!(args.command, ["ls", "-l"]);
}

#[test]
fn lock_refuses_bad_values() {
    for bad in [
        &["officer", "lock", "x"][..],
        &["officer", "lock", "x", "-n", "-w", "1", "--", "true"],
        &["officer", "lock", "x", "-w", "-1", "--", "true"],
        &["officer", "lock", "x", "-E", "256", "--", "true"],
    ] {
        assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn connection_flags_match_the_server() {
    let ClientCommand::Locks(args) = parse(&[
        "officer",
        "locks",
        "jobs/",
        "-h",
        "127.0.0.1",
        "-p",
        "9",
        "-o",
        "unix",
        "-f",
        "/s",
        "--json",
    ]) else {
        panic!("not locks");
    };
    assert_eq!(args.prefix, "jobs/");
    assert!(args.json);
    let c = &args.connect;
    assert_eq!((c.host.as_deref(), c.port, c.socket_type), (Some("127.0.0.1"), Some(9), SocketType::Unix));
    assert_eq!(c.describe(), "/s");
}

#[test]
fn defaults_point_at_localhost() {
    let ClientCommand::Ping(args) = parse(&["officer", "ping"]) else { panic!("not ping") };
    assert_eq!(args.connect.describe(), "localhost:11500");
    assert_eq!(args.connect.connect_timeout, Duration::from_secs(5));
    assert_eq!(args.count, 1);
}

#[test]
fn long_help_is_available_and_short_h_is_host() {
    let err = Cli::try_parse_from(["officer", "stats", "--help"]).unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp);
    let ClientCommand::Stats(args) = parse(&["officer", "stats", "-h", "db1"]) else { panic!("not stats") };
    assert_eq!(args.connect.host.as_deref(), Some("db1"));
}

/// `endpoint_from` with these variables set and no others.
fn endpoint(args: &[&str], vars: &[(&str, &str)]) -> Result<(String, u16), String> {
    let mut argv = vec!["officer", "ping"];
    argv.extend(args);
    let ClientCommand::Ping(ping) = parse(&argv) else { panic!("not ping") };
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    ping.connect.endpoint_from(|var| vars.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone()))
}

#[test]
fn the_address_takes_each_part_from_the_first_layer_that_gives_it() {
    let ep = |host: &str, port: u16| Ok((host.to_owned(), port));
    assert_eq!(endpoint(&[], &[]), ep("localhost", 11500));
    assert_eq!(endpoint(&[], &[("OFFICER_ADDR", "a:1")]), ep("a", 1));
    assert_eq!(endpoint(&[], &[("OFFICER_ADDR", "a:1"), ("OFFICER_PORT", "2")]), ep("a", 2));
    assert_eq!(endpoint(&[], &[("OFFICER_ADDR", "a:1"), ("OFFICER_HOST", "b")]), ep("b", 1));
    assert_eq!(endpoint(&[], &[("OFFICER_HOST", "b:3"), ("OFFICER_ADDR", "a:1")]), ep("b", 3));
    assert_eq!(endpoint(&["-h", "c"], &[("OFFICER_HOST", "b:3")]), ep("c", 3));
    assert_eq!(endpoint(&["-p", "4"], &[("OFFICER_HOST", "b:3")]), ep("b", 4));
    assert_eq!(endpoint(&["-h", "c:5"], &[("OFFICER_PORT", "3")]), ep("c", 5));
    assert_eq!(endpoint(&["-h", "[::1]:6"], &[]), ep("::1", 6));
    assert_eq!(endpoint(&["-h", "::1"], &[]), ep("::1", 11500));
    assert_eq!(endpoint(&["-h", "[::1]"], &[("OFFICER_PORT", "7")]), ep("::1", 7));
    // Empty variables are unset, not an empty host.
    assert_eq!(endpoint(&[], &[("OFFICER_HOST", ""), ("OFFICER_PORT", "")]), ep("localhost", 11500));
}

#[test]
fn malformed_addresses_are_refused_with_their_source_named() {
    for (args, vars, named) in [
        (&["-h", "c:5", "-p", "6"][..], &[][..], "-h/-p"),
        (&[], &[("OFFICER_PORT", "x")], "OFFICER_PORT"),
        (&[], &[("OFFICER_PORT", "70000")], "OFFICER_PORT"),
        (&[], &[("OFFICER_ADDR", "a:b")], "OFFICER_ADDR"),
        (&[], &[("OFFICER_HOST", "h:1"), ("OFFICER_PORT", "2")], "OFFICER_HOST"),
        (&["-h", "[::1"], &[], "-h/-p"),
        (&["-h", "[::1]x"], &[], "-h/-p"),
    ] {
        let err = endpoint(args, vars).expect_err(&format!("{args:?} {vars:?}"));
        assert!(err.contains(named), "{args:?} {vars:?}: {err}");
    }
}

#[test]
fn lock_takes_a_shell_command_line_with_c() {
    let ClientCommand::Lock(args) = parse(&["officer", "lock", "job", "-c", "a | b && c"]) else {
        panic!("not lock")
    };
    assert_eq!(args.shell_command.as_deref(), Some(std::ffi::OsStr::new("a | b && c")));
    assert!(args.command.is_empty());
    assert!(Cli::try_parse_from(["officer", "lock", "job", "-c", "x", "--", "y"]).is_err());
}

#[test]
fn long_names_are_cut_in_messages() {
    assert_eq!(shown_name("deploy"), "\"deploy\"");
    let cut = shown_name(&"ü".repeat(100));
    assert!(cut.ends_with("... (200 bytes)") && cut.len() < 70, "{cut}");
}

#[test]
fn flattening_does_not_leak_the_enum_docs_into_the_binary_help() {
    let help = Cli::command().render_help().to_string();
    assert!(!help.contains("flattened") && !help.contains("```"), "{help}");
}

#[test]
fn exit_statuses_say_unreachable_only_when_the_server_was_not_reached() {
    use crate::client::Error;
    use crate::protocol::{DecodeError, ErrorCode};
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    let cases = [
        (Error::io(refused), EXIT_UNAVAILABLE),
        (Error::connection_lost("the server closed the connection", vec![]), EXIT_UNAVAILABLE),
        (Error::server(ErrorCode::LimitExceeded, "too many connections"), EXIT_UNAVAILABLE),
        (Error::server(ErrorCode::ShuttingDown, ""), EXIT_UNAVAILABLE),
        (Error::invalid_name("", DecodeError::EmptyName), EXIT_DATA),
        (Error::server(ErrorCode::BadName, "lock name is empty"), EXIT_DATA),
        (Error::server(ErrorCode::AuthRequired, ""), EXIT_NO_PERM),
        (Error::server(ErrorCode::AuthFailed, ""), EXIT_NO_PERM),
        (Error::not_officer("h:22", b"SSH-2.0"), EXIT_PROTOCOL),
        (Error::protocol("unexpected answer"), EXIT_PROTOCOL),
        (Error::not_held("x"), EXIT_SOFTWARE),
    ];
    for (err, code) in cases {
        assert_eq!(exit_status(&err), code, "{err}");
    }
}

/// `servers_from` with these variables set and no others.
fn servers(args: &[&str], vars: &[(&str, &str)]) -> Option<Result<Vec<(String, u16)>, String>> {
    let mut argv = vec!["officer", "ping"];
    argv.extend(args);
    let ClientCommand::Ping(ping) = parse(&argv) else { panic!("not ping") };
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    ping.connect.servers_from(|var| vars.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone()))
}

#[test]
fn a_comma_list_of_hosts_names_several_servers_with_ports_as_for_one() {
    let list = |pairs: &[(&str, u16)]| Some(Ok(pairs.iter().map(|(h, p)| (h.to_string(), *p)).collect()));
    // One host is not a list: it keeps the single-server path untouched.
    assert_eq!(servers(&["-h", "a:1"], &[]), None);
    assert_eq!(servers(&[], &[("OFFICER_ADDR", "a:1")]), None);
    assert_eq!(servers(&["-H", "a:1,b:2"], &[]), list(&[("a", 1), ("b", 2)]));
    assert_eq!(servers(&["-h", "a, b:2,[::1]:3"], &[]), list(&[("a", 11500), ("b", 2), ("::1", 3)]));
    assert_eq!(servers(&["-h", "a,b", "-p", "4"], &[]), list(&[("a", 4), ("b", 4)]));
    assert_eq!(servers(&[], &[("OFFICER_HOST", "a,b"), ("OFFICER_PORT", "5")]), list(&[("a", 5), ("b", 5)]));
    assert_eq!(servers(&[], &[("OFFICER_ADDR", "a:6,b:7")]), list(&[("a", 6), ("b", 7)]));
    // Each part from the first layer that gives it, as for one server.
    assert_eq!(servers(&["-h", "a,b"], &[("OFFICER_ADDR", "c:8")]), list(&[("a", 8), ("b", 8)]));
    assert_eq!(servers(&["-h", "c"], &[("OFFICER_HOST", "a,b")]), None);
    // A UNIX socket ignores the host.
    assert_eq!(servers(&["-h", "a,b", "-o", "unix"], &[]), None);
    for (args, vars, named) in [
        (&["-h", "a:1,b", "-p", "2"][..], &[][..], "-h/-p"),
        (&["-h", "a,,b"], &[], "empty"),
        (&["-h", "a,b:http"], &[], "-h/-p"),
        (&[], &[("OFFICER_HOST", "a,b"), ("OFFICER_PORT", "x")], "OFFICER_PORT"),
    ] {
        let err = servers(args, vars).expect("a list").expect_err(&format!("{args:?} {vars:?}"));
        assert!(err.contains(named), "{args:?} {vars:?}: {err}");
    }
}
