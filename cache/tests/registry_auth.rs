//! Logins: htpasswd basic auth on a real registry, and the bearer-token
//! challenge flow on a small fake one. One test function per binary
//! section, because credentials come through `$DOCKER_CONFIG`, which is
//! process-wide.

use std::sync::Arc;

use kiln_cache::registry::{
    self, Credentials, DockerConfig, NoProgress, PullOptions, PushOptions, RegistryConfig, Secret,
};
use kiln_cache::Reference;
use kiln_testsupport::*;

#[test]
fn basic_and_bearer_auth() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cfgdir = tempfile::tempdir().unwrap();
    std::env::set_var("DOCKER_CONFIG", cfgdir.path());

    // --- htpasswd basic auth on docker-registry
    let reg = TestRegistry::with_htpasswd("kiln", "correct horse");
    let (_a, root) = temp_root();
    let top = import_oci_archive(&root, &busybox_fixture(), "busybox:1.35");
    let local = Reference::parse("busybox:1.35").unwrap();
    let remote = Reference::parse(&reg.reference("private/busybox:1")).unwrap();

    let err = rt
        .block_on(registry::push(
            &root,
            &local,
            &remote,
            &PushOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, registry::RegistryError::Unauthorized { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("unauthorized") && msg.contains(&reg.addr) && msg.contains("kiln login"),
        "{msg}"
    );

    let wrong = Credentials {
        username: "kiln".into(),
        password: Secret::new("battery staple"),
    };
    let err = rt
        .block_on(registry::verify_login(
            &RegistryConfig::default(),
            &reg.addr,
            &wrong,
        ))
        .unwrap_err();
    let msg = format!("{err} {err:?}");
    assert!(
        msg.contains("unauthorized") && msg.contains(&reg.addr),
        "{msg}"
    );
    assert!(
        !msg.contains("battery staple"),
        "the password leaked: {msg}"
    );

    let right = Credentials {
        username: "kiln".into(),
        password: Secret::new("correct horse"),
    };
    rt.block_on(registry::verify_login(
        &RegistryConfig::default(),
        &reg.addr,
        &right,
    ))
    .unwrap();
    let mut dc = DockerConfig::load_default().unwrap();
    dc.store(&reg.addr, &right).unwrap();
    assert!(cfgdir.path().join("config.json").exists());

    let pushed = rt
        .block_on(registry::push(
            &root,
            &local,
            &remote,
            &PushOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap();
    assert_eq!(pushed.digest(), top.digest());
    let (_b, dst) = temp_root();
    let got = rt
        .block_on(registry::pull(
            &dst,
            &remote,
            &PullOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap();
    assert_eq!(got.digest(), top.digest());
    assert_eq!(reachable(&dst, got.digest().as_ref()).len(), 7);

    // After logout the registry refuses again.
    assert!(DockerConfig::load_default()
        .unwrap()
        .erase(&reg.addr)
        .unwrap());
    let (_c, dst) = temp_root();
    let err = rt
        .block_on(registry::pull(
            &dst,
            &remote,
            &PullOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("unauthorized"), "{err}");

    // --- bearer tokens: anonymous token, then a token server wanting a login
    let (routes, md, _) = tiny_image("tok/app", "v1", b"layer bytes", None);
    let fake = FakeRegistry::start_with(
        routes.clone(),
        Some(Bearer {
            token: "t0k3n".into(),
            login: None,
        }),
    );
    let r = Reference::parse(&format!("{}/tok/app:v1", fake.addr)).unwrap();
    let (_d, dst) = temp_root();
    let got = rt
        .block_on(registry::pull(
            &dst,
            &r,
            &PullOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap();
    assert_eq!(got.digest().to_string(), md);
    let seen = fake.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|s| s.starts_with("GET /token?")
                && s.contains("scope=repository%3Atok%2Fapp%3Apull")),
        "{seen:?}"
    );

    let fake = FakeRegistry::start_with(
        routes,
        Some(Bearer {
            token: "t0k3n".into(),
            login: Some(("bob".into(), "pw".into())),
        }),
    );
    let r = Reference::parse(&format!("{}/tok/app:v1", fake.addr)).unwrap();
    let (_e, dst) = temp_root();
    let err = rt
        .block_on(registry::pull(
            &dst,
            &r,
            &PullOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap_err();
    assert!(
        err.to_string().contains("unauthorized") && err.to_string().contains(&fake.addr),
        "{err}"
    );
    let bob = Credentials {
        username: "bob".into(),
        password: Secret::new("pw"),
    };
    DockerConfig::load_default()
        .unwrap()
        .store(&fake.addr, &bob)
        .unwrap();
    let got = rt
        .block_on(registry::pull(
            &dst,
            &r,
            &PullOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap();
    assert_eq!(got.digest().to_string(), md);

    // --- an identity token (docker's `identitytoken`) is a refresh token
    let (routes, md, _) = tiny_image("tok/app", "v1", b"layer bytes", None);
    let fake = FakeRegistry::start_with(
        routes,
        Some(Bearer {
            token: "t0k3n".into(),
            login: Some(("<token>".into(), "refresh-me".into())),
        }),
    );
    std::fs::write(
        cfgdir.path().join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"identitytoken":"refresh-me"}}}}}}"#,
            fake.addr
        ),
    )
    .unwrap();
    let r = Reference::parse(&format!("{}/tok/app:v1", fake.addr)).unwrap();
    let (_f, dst) = temp_root();
    let got = rt
        .block_on(registry::pull(
            &dst,
            &r,
            &PullOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap();
    assert_eq!(got.digest().to_string(), md);
    assert!(
        fake.seen.lock().unwrap().iter().any(|s| s == "POST /token"),
        "{:?}",
        fake.seen.lock().unwrap()
    );
}
