//! Typed instructions: flags, forms and BuildKit's errors, with locations.

use kiln_frontend::instructions::{
    from_dockerfile, Command, CommandLine, Instructions, MountType, Sharing,
};
use kiln_frontend::ErrorKind;

fn typed(src: &str) -> kiln_frontend::Result<Instructions> {
    from_dockerfile(&kiln_frontend::parser::parse(src)?)
}

fn one(src: &str) -> Command {
    let t = typed(&format!("FROM scratch\n{src}\n")).unwrap_or_else(|e| panic!("{src}: {e:?}"));
    t.instructions[1].command.clone()
}

fn fails(src: &str) -> kiln_frontend::Error {
    typed(&format!("FROM scratch\n{src}\n")).expect_err(src)
}

#[test]
fn from_forms() {
    let t = typed("FROM --platform=linux/arm64 img:1 AS Build\n").unwrap();
    match &t.instructions[0].command {
        Command::From(f) => {
            assert_eq!(f.image, "img:1");
            assert_eq!(f.name.as_deref(), Some("build"));
            assert_eq!(f.platform.as_deref(), Some("linux/arm64"));
        }
        c => panic!("{c:?}"),
    }
    assert!(typed("FROM a b\n")
        .unwrap_err()
        .message
        .contains("either one or three"));
    assert!(typed("FROM a AS 1x\n")
        .unwrap_err()
        .message
        .contains("invalid name for build stage"));
}

#[test]
fn exec_and_shell_forms() {
    assert_eq!(
        one("CMD [\"a\", \"b\"]"),
        Command::Cmd(kiln_frontend::instructions::CmdLine {
            cmd: CommandLine::Exec(vec!["a".into(), "b".into()])
        })
    );
    assert_eq!(
        one("ENTRYPOINT run it"),
        Command::Entrypoint(kiln_frontend::instructions::CmdLine {
            cmd: CommandLine::Shell("run it".into())
        })
    );
    match one("SHELL [\"pwsh\", \"-c\"]") {
        Command::Shell { shell } => assert_eq!(shell, ["pwsh", "-c"]),
        c => panic!("{c:?}"),
    }
    assert!(fails("SHELL pwsh -c").message.contains("JSON form"));
}

#[test]
fn run_flags_and_mounts() {
    match one("RUN --mount=type=cache,target=/root/.cache,sharing=private,id=x --network=host --security=insecure make") {
        Command::Run(r) => {
            assert_eq!(r.network, kiln_frontend::instructions::NetworkMode::Host);
            assert_eq!(r.security, kiln_frontend::instructions::Security::Insecure);
            let m = &r.typed_mounts.unwrap()[0];
            assert_eq!(m.kind, MountType::Cache);
            assert_eq!(m.sharing, Some(Sharing::Private));
            assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        }
        c => panic!("{c:?}"),
    }
    match one("RUN --mount=type=secret,id=tok,env=TOKEN,required --mount=type=ssh cat") {
        Command::Run(r) => {
            let ms = r.typed_mounts.unwrap();
            assert_eq!(ms[0].kind, MountType::Secret);
            assert!(ms[0].required && ms[0].readonly);
            assert_eq!(ms[0].env.as_deref(), Some("TOKEN"));
            assert_eq!(ms[1].kind, MountType::Ssh);
        }
        c => panic!("{c:?}"),
    }
    match one("RUN --mount=target=/x,uid=$U true") {
        Command::Run(r) => assert!(r.typed_mounts.is_none(), "variables are typed at plan time"),
        c => panic!("{c:?}"),
    }
    assert!(fails("RUN --network=bridge x")
        .message
        .contains("invalid network mode"));
    assert!(fails("RUN --mount=type=secret,from=x,id=a x")
        .message
        .contains("secret mount should not have a from"));
    assert!(fails("RUN --mount=type=bind,from=$X,target=/a x")
        .message
        .contains("doesn't support variable expansion"));
}

#[test]
fn copy_and_add_flags() {
    match one("COPY --from=build --chown=1:2 --chmod=644 --link --parents --exclude=*.md --exclude=x a b /dst/") {
        Command::Copy(c) => {
            assert_eq!(c.from.as_deref(), Some("build"));
            assert_eq!(c.chown.as_deref(), Some("1:2"));
            assert_eq!(c.chmod.as_deref(), Some("644"));
            assert!(c.link && c.parents);
            assert_eq!(c.excludes, ["*.md", "x"]);
            assert_eq!(c.sources, ["a", "b"]);
            assert_eq!(c.dest, "/dst/");
        }
        c => panic!("{c:?}"),
    }
    match one("ADD --checksum=sha256:abc --keep-git-dir=false https://x/y /y") {
        Command::Add(c) => {
            assert_eq!(c.checksum.as_deref(), Some("sha256:abc"));
            assert_eq!(c.keep_git_dir, Some(false));
        }
        c => panic!("{c:?}"),
    }
    let e = fails("COPY --checksum=sha256:abc a b");
    assert_eq!(e.kind, ErrorKind::UnknownFlag);
    assert_eq!(e.message, "unknown flag: --checksum");
    let loc = e.location.unwrap();
    assert_eq!((loc.line, loc.column), (2, 6), "points at the flag");
    assert!(fails("COPY onlyone")
        .message
        .contains("requires at least two arguments"));
    assert!(fails("COPY --link=maybe a b")
        .message
        .contains("expecting boolean value"));
    assert!(fails("COPY --from a b")
        .message
        .contains("missing a value on flag: --from"));
    assert!(fails("COPY --from=a --from=b a b")
        .message
        .contains("duplicate flag specified: --from"));
}

#[test]
fn copy_heredoc_sources() {
    match one("COPY <<EOF /etc/conf\nline one\nEOF") {
        Command::Copy(c) => {
            assert!(c.sources.is_empty());
            assert_eq!(c.inline_sources.len(), 1);
            assert_eq!(c.inline_sources[0].path, "EOF");
            assert_eq!(c.inline_sources[0].data, "line one\n");
            assert!(c.inline_sources[0].expand);
        }
        c => panic!("{c:?}"),
    }
}

#[test]
fn env_label_arg_pairs() {
    match one("ENV A=1 B=\"two words\"") {
        Command::Env { pairs } => {
            assert_eq!(pairs.len(), 2);
            assert_eq!(
                pairs[1].value, "\"two words\"",
                "quotes kept until expansion"
            );
            assert!(!pairs[0].legacy);
        }
        c => panic!("{c:?}"),
    }
    match one("ENV LEGACY value with spaces") {
        Command::Env { pairs } => assert!(pairs[0].legacy && pairs[0].value == "value with spaces"),
        c => panic!("{c:?}"),
    }
    match one("ARG A B=1 C=") {
        Command::Arg { args } => {
            assert_eq!(args[0].default, None);
            assert_eq!(args[1].default.as_deref(), Some("1"));
            assert_eq!(args[2].default.as_deref(), Some(""));
        }
        c => panic!("{c:?}"),
    }
    assert!(fails("ARG =x")
        .message
        .contains("ARG names can not be blank"));
}

#[test]
fn healthcheck_forms() {
    match one("HEALTHCHECK --interval=5s --timeout=3s --start-period=1s --start-interval=500ms --retries=2 CMD curl -f x") {
        Command::Healthcheck(h) => {
            assert_eq!(h.test, ["CMD-SHELL", "curl -f x"]);
            assert_eq!(h.interval, 5_000_000_000);
            assert_eq!(h.start_interval, 500_000_000);
            assert_eq!(h.retries, 2);
        }
        c => panic!("{c:?}"),
    }
    match one("HEALTHCHECK NONE") {
        Command::Healthcheck(h) => assert_eq!(h.test, ["NONE"]),
        c => panic!("{c:?}"),
    }
    assert!(fails("HEALTHCHECK --interval=5 CMD x")
        .message
        .contains("missing unit"));
    assert!(fails("HEALTHCHECK --interval=1ns CMD x")
        .message
        .contains("cannot be less than 1ms"));
    assert!(fails("HEALTHCHECK --retries=-1 CMD x")
        .message
        .contains("cannot be negative"));
    assert!(fails("HEALTHCHECK CONNECT x")
        .message
        .contains("Unknown type"));
    assert!(fails("HEALTHCHECK CMD").message.contains("Missing command"));
    assert_eq!(
        fails("HEALTHCHECK --bogus=1 CMD x").kind,
        ErrorKind::UnknownFlag
    );
}

#[test]
fn onbuild_rules() {
    match one("ONBUILD RUN echo $X") {
        Command::Onbuild(o) => {
            assert_eq!(o.expression, "RUN echo $X");
            assert!(matches!(
                o.trigger.as_deref().map(|t| &t.command),
                Some(Command::Run(_))
            ));
        }
        c => panic!("{c:?}"),
    }
    assert!(fails("ONBUILD ONBUILD RUN x")
        .message
        .contains("Chaining ONBUILD"));
    assert_eq!(
        fails("ONBUILD FROM x").message,
        "FROM isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        fails("ONBUILD MAINTAINER x").message,
        "MAINTAINER isn't allowed as an ONBUILD trigger"
    );
}

#[test]
fn other_instructions_and_errors() {
    assert!(matches!(one("WORKDIR /a"), Command::Workdir { .. }));
    assert!(matches!(one("USER 1:2"), Command::User { .. }));
    assert!(matches!(one("STOPSIGNAL 9"), Command::StopSignal { .. }));
    match one("VOLUME [\"/a\", \"/b\"]") {
        Command::Volume { paths } => assert_eq!(paths, ["/a", "/b"]),
        c => panic!("{c:?}"),
    }
    let t = typed("FROM scratch\nMAINTAINER me\n").unwrap();
    assert_eq!(t.warnings.len(), 1);
    let e = fails("FROBNICATE now");
    assert_eq!(e.kind, ErrorKind::UnknownInstruction);
    assert_eq!(e.message, "unknown instruction: FROBNICATE");
    let loc = e.location.unwrap();
    assert_eq!((loc.line, loc.column, loc.len), (2, 1, 10));
    assert_eq!(fails("WORKDIR --x=1 /a").message, "unknown flag: --x");
    // JSON serialisation is what `kiln parse --format json` prints.
    let t = typed("FROM scratch\nRUN --mount=type=tmpfs,target=/t echo\n").unwrap();
    let v = serde_json::to_value(&t).unwrap();
    assert_eq!(v["instructions"][1]["command"]["instruction"], "RUN");
    assert_eq!(
        v["instructions"][1]["command"]["typed_mounts"][0]["type"],
        "tmpfs"
    );
}

#[test]
fn go_durations() {
    use kiln_frontend::instructions::parse_duration;
    assert_eq!(parse_duration("1h2m3.5s").unwrap(), 3_723_500_000_000);
    assert_eq!(parse_duration("0").unwrap(), 0);
    assert_eq!(parse_duration("250us").unwrap(), 250_000);
    assert!(parse_duration("").is_err());
    assert!(parse_duration("5x").is_err());
    assert!(parse_duration("1..5s").is_err());
    assert_eq!(kiln_frontend::plan::go_duration(90_000_000_000), "1m30s");
    assert_eq!(
        kiln_frontend::plan::go_duration(3_600_000_000_000),
        "1h0m0s"
    );
    assert_eq!(kiln_frontend::plan::go_duration(1_500_000), "1.5ms");
}
