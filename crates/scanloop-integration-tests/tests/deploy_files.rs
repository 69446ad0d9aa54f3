//! The deployment files are checked without a Docker engine or a Kubernetes cluster: they must
//! parse, reference only what exists, and keep the properties operators rely on (health checks,
//! start-up order, locked-down containers).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_yaml::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

fn str_of(value: &Value) -> Option<&str> {
    value.as_str()
}

#[test]
fn compose_file_is_consistent() {
    let mut compose = yaml(&repo().join("docker-compose.yml"));
    merge_all(&mut compose);
    let services = compose["services"].as_mapping().expect("services map");
    for required in [
        "kafka",
        "scylla",
        "otel-collector",
        "jaeger",
        "migrate",
        "activation",
        "membership",
        "referral",
        "payouts",
    ] {
        assert!(
            services.contains_key(required),
            "compose lacks service {required}"
        );
    }
    // `docker compose up` without a profile runs the cluster itself; traces are an extra.
    for core in CORE_SERVICES {
        assert!(
            profiles_of(&services[core]).is_empty(),
            "{core} runs without any profile"
        );
    }
    let mut observability: Vec<&str> = services
        .iter()
        .filter(|(_, service)| profiles_of(service).contains(&"observability"))
        .map(|(name, _)| name.as_str().unwrap())
        .collect();
    observability.sort_unstable();
    assert_eq!(
        observability,
        ["jaeger", "otel-collector"],
        "the observability profile holds the collector and Jaeger"
    );
    for (name, service) in services {
        let name = name.as_str().unwrap();
        assert!(
            service.get("image").is_some() || service.get("build").is_some(),
            "{name}: needs an image or a build"
        );
        let one_shot = service.get("restart").and_then(str_of) == Some("no");
        if !one_shot {
            let test = &service["healthcheck"]["test"];
            assert!(
                test.is_sequence(),
                "{name}: long-running services need a healthcheck"
            );
        }
        if let Some(depends) = service.get("depends_on").and_then(Value::as_mapping) {
            for (target, condition) in depends {
                let target = target.as_str().unwrap();
                let target_service = services
                    .get(target)
                    .unwrap_or_else(|| panic!("{name} depends on unknown {target}"));
                let wanted = if target_service.get("restart").and_then(str_of) == Some("no") {
                    "service_completed_successfully"
                } else {
                    "service_healthy"
                };
                assert_eq!(
                    condition["condition"].as_str(),
                    Some(wanted),
                    "{name} must wait for {target} with {wanted}"
                );
                check_dependency_profiles(name, service, target, target_service, condition);
            }
        }
        for volume in service
            .get("volumes")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let volume = volume.as_str().unwrap();
            if let Some(local) = volume.strip_prefix("./") {
                let path = local.split(':').next().unwrap();
                assert!(
                    repo().join(path).exists(),
                    "{name}: mounts missing file {path}"
                );
            }
        }
        for port in service
            .get("ports")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let port = port.as_str().expect("ports are quoted strings");
            assert!(
                port.split(':').all(|p| p.parse::<u16>().is_ok()),
                "{name}: bad port mapping {port}"
            );
        }
        if let Some(build) = service.get("build") {
            let dockerfile = build["dockerfile"].as_str().expect("explicit dockerfile");
            assert!(
                repo().join(dockerfile).exists(),
                "{name}: missing {dockerfile}"
            );
        }
    }
    let migrate = &services["migrate"];
    for dependency in ["kafka", "scylla"] {
        assert!(
            migrate["depends_on"].get(dependency).is_some(),
            "migrate waits for {dependency}"
        );
    }
    let env = &migrate["environment"];
    assert_eq!(env["SCANLOOP_CQL_NODES"].as_str(), Some("scylla:9042"));
    assert_eq!(env["SCANLOOP_KAFKA_BROKERS"].as_str(), Some("kafka:9092"));
    assert!(
        env["SCANLOOP_KEYSPACE_OPTIONS"]
            .as_str()
            .unwrap()
            .contains("tablets"),
        "ScyllaDB keyspaces need tablets off for LWT"
    );
    check_env_story(services);
    // Every service takes callers' keys and TLS from compose secrets whose default files exist,
    // and is health-checked on its plaintext health port.
    let secrets = compose["secrets"].as_mapping().expect("top-level secrets");
    for (name, secret) in secrets {
        let file = secret["file"].as_str().expect("secrets are files");
        let default = file
            .strip_prefix("${")
            .and_then(|rest| rest.split_once(":-./"))
            .map(|(_, path)| path.trim_end_matches('}'))
            .unwrap_or_else(|| panic!("{name:?}: a file from .env with a default: {file}"));
        assert!(repo().join(default).exists(), "{name:?}: missing {default}");
    }
    for service in ["activation", "membership", "referral", "payouts"] {
        let declared: Vec<&str> = services[service]["secrets"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{service} uses secrets"))
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        let env = &services[service]["environment"];
        for (variable, secret) in [
            ("SCANLOOP_AUTH_JWKS", "scanloop-jwks"),
            ("SCANLOOP_TLS_CERT", "scanloop-tls-cert"),
            ("SCANLOOP_TLS_KEY", "scanloop-tls-key"),
        ] {
            assert!(declared.contains(&secret), "{service} mounts {secret}");
            assert!(secrets.contains_key(secret), "{secret} is declared");
            assert_eq!(
                env[variable].as_str(),
                Some(format!("/run/secrets/{secret}").as_str()),
                "{service}: {variable}"
            );
        }
        let health_port = env["SCANLOOP_HEALTH_ADDR"]
            .as_str()
            .and_then(|addr| addr.rsplit(':').next())
            .unwrap_or_else(|| panic!("{service} has a plaintext health port"));
        let test = serde_yaml::to_string(&services[service]["healthcheck"]["test"]).unwrap();
        assert!(
            test.contains(&format!("127.0.0.1:{health_port}")),
            "{service}: the health check uses the health port: {test}"
        );
    }
    // The collector configuration it mounts must itself parse and route traces somewhere.
    let collector = yaml(&repo().join("deploy/otel/collector.yaml"));
    assert!(collector["service"]["pipelines"]["traces"]["exporters"].is_sequence());
}

/// Resolves `<<` merge keys as compose does, nested ones included (a service's environment merges
/// x-service-env, which merges x-scanloop-env): serde_yaml resolves one level per pass.
fn merge_all(value: &mut Value) {
    fn has_merge_key(value: &Value) -> bool {
        match value {
            Value::Mapping(mapping) => {
                mapping.contains_key("<<") || mapping.values().any(has_merge_key)
            }
            Value::Sequence(sequence) => sequence.iter().any(has_merge_key),
            _ => false,
        }
    }
    while has_merge_key(value) {
        value.apply_merge().expect("merge keys");
    }
}

/// The services that `docker compose up` runs without any profile.
const CORE_SERVICES: [&str; 7] = [
    "kafka",
    "scylla",
    "migrate",
    "activation",
    "membership",
    "referral",
    "payouts",
];

fn profiles_of(service: &Value) -> Vec<&str> {
    service
        .get("profiles")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .map(|profile| profile.as_str().expect("profiles are names"))
        .collect()
}

/// Compose refuses to start a service whose required dependency is left out by the active
/// profiles; `required: false` waits for a dependency only when its profile is on.
fn check_dependency_profiles(
    name: &str,
    service: &Value,
    target: &str,
    target_service: &Value,
    condition: &Value,
) {
    let required = match condition.get("required") {
        None => true,
        Some(required) => required
            .as_bool()
            .unwrap_or_else(|| panic!("{name} -> {target}: `required` is true or false")),
    };
    let own = profiles_of(service);
    let theirs = profiles_of(target_service);
    if required {
        // Every profile that starts this service must start the dependency too.
        assert!(
            theirs.is_empty() || (!own.is_empty() && own.iter().all(|p| theirs.contains(p))),
            "{name} requires {target}, which only runs with the profiles {theirs:?}: \
             add `required: false` or drop the dependency"
        );
    } else {
        assert!(
            !theirs.is_empty(),
            "{name}: `required: false` on {target}, which always runs, hides a missing start-up order"
        );
    }
}

/// `cp .env.example .env` gives a development cluster; secrets only ever come from .env (or
/// the shell), never from a value written in the compose file or the example.
fn check_env_story(services: &serde_yaml::Mapping) {
    let example = std::fs::read_to_string(repo().join(".env.example")).expect(".env.example");
    let settings: Vec<(&str, &str)> = example
        .lines()
        .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
        .map(|line| line.split_once('=').expect("NAME=value lines"))
        .collect();
    for (name, value) in &settings {
        assert!(
            *name == "SCANLOOP_ENV" || value.is_empty(),
            ".env.example sets nothing but SCANLOOP_ENV: {name}={value}"
        );
    }
    assert!(
        settings.contains(&("SCANLOOP_ENV", "dev")),
        ".env.example is for development: SCANLOOP_ENV=dev"
    );
    let gitignore = std::fs::read_to_string(repo().join(".gitignore")).expect(".gitignore");
    assert!(
        gitignore.lines().any(|line| line == "/.env"),
        ".env is never committed"
    );
    for service in ["migrate", "activation", "membership", "referral", "payouts"] {
        let env = &services[service]["environment"];
        // Unset is production, so compose makes the choice explicit rather than default to one.
        assert!(
            env["SCANLOOP_ENV"]
                .as_str()
                .is_some_and(|v| v.starts_with("${SCANLOOP_ENV:?")),
            "{service}: SCANLOOP_ENV is required from .env"
        );
        // Without the observability profile there is no collector: export only when .env says.
        assert_eq!(
            env["OTEL_EXPORTER_OTLP_ENDPOINT"].as_str(),
            Some("${OTEL_EXPORTER_OTLP_ENDPOINT:-}"),
            "{service}: the OTLP endpoint comes from .env, empty by default"
        );
    }
    let endpoint = example
        .lines()
        .find_map(|line| line.strip_prefix("#OTEL_EXPORTER_OTLP_ENDPOINT=http://"))
        .expect(".env.example shows the collector's endpoint");
    let collector = endpoint.split(':').next().unwrap();
    assert!(
        profiles_of(&services[collector]).contains(&"observability"),
        ".env.example's OTLP endpoint {collector} is the observability profile's collector"
    );
    assert!(
        example
            .lines()
            .any(|line| line == "#COMPOSE_PROFILES=observability"),
        ".env.example shows how to turn the observability profile on"
    );
    // Empty secrets pass through to the service, which refuses them outside development mode.
    for (service, secrets) in [
        (
            "activation",
            &["SCANLOOP_CODE_SECRET", "SCANLOOP_IDENTITY_SECRET"][..],
        ),
        ("membership", &["SCANLOOP_IDENTITY_SECRET"][..]),
        ("referral", &["SCANLOOP_IDENTITY_SECRET"][..]),
        ("payouts", &["SCANLOOP_IDENTITY_SECRET"][..]),
    ] {
        for secret in secrets {
            let value = services[service]["environment"][*secret]
                .as_str()
                .unwrap_or_else(|| panic!("{service} sets {secret}"));
            assert_eq!(
                value,
                format!("${{{secret}:-}}"),
                "{service}: {secret} comes from .env, never a value in the compose file"
            );
            assert!(
                example.lines().any(|l| l == format!("{secret}=")),
                ".env.example lists {secret} (empty)"
            );
        }
    }
}

#[test]
fn kubernetes_secrets_come_from_a_secret_and_only_the_devstack_overlay_is_development() {
    let base_config = yaml(&repo().join("deploy/k8s/base/config.yaml"));
    assert!(
        base_config["data"].get("SCANLOOP_ENV").is_none(),
        "the base is production: no SCANLOOP_ENV"
    );
    let overlay = yaml(&repo().join("deploy/k8s/overlays/devstack/kustomization.yaml"));
    let patches = serde_yaml::to_string(&overlay["patches"]).unwrap();
    assert!(
        patches.contains("/data/SCANLOOP_ENV") && patches.contains("value: dev"),
        "the devstack overlay runs in development mode: {patches}"
    );
    let generated = overlay["secretGenerator"]
        .as_sequence()
        .expect("the devstack overlay generates its Secret");
    for secret in ["scanloop-secrets", "scanloop-auth", "scanloop-tls"] {
        assert!(
            generated.iter().any(|g| g["name"].as_str() == Some(secret)),
            "the overlay generates {secret}"
        );
    }
    // The overlay's development credentials are deploy/dev's (kustomize cannot read outside
    // the overlay, so they are copies).
    for file in ["jwks.json", "tls/server.crt", "tls/server.key"] {
        let copy = std::fs::read(repo().join("deploy/k8s/overlays/devstack/dev").join(file));
        let original = std::fs::read(repo().join("deploy/dev").join(file));
        assert_eq!(
            copy.unwrap(),
            original.unwrap(),
            "deploy/k8s/overlays/devstack/dev/{file} differs from deploy/dev/{file}"
        );
    }
}

#[test]
fn kubernetes_manifests_are_consistent_and_locked_down() {
    for kustomization in ["deploy/k8s/base", "deploy/k8s/overlays/devstack"] {
        let dir = repo().join(kustomization);
        let k = yaml(&dir.join("kustomization.yaml"));
        for resource in k["resources"].as_sequence().expect("resources") {
            let path = dir.join(resource.as_str().unwrap());
            assert!(
                path.exists(),
                "{kustomization}: missing resource {}",
                path.display()
            );
            if path.is_file() {
                let text = std::fs::read_to_string(&path).unwrap();
                for document in serde_yaml::Deserializer::from_str(&text) {
                    let doc = Value::deserialize(document)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    check_workload(&doc, &path);
                }
            }
        }
    }
}

fn check_workload(doc: &Value, path: &Path) {
    let kind = doc["kind"]
        .as_str()
        .unwrap_or_else(|| panic!("{}: no kind", path.display()));
    let pod = match kind {
        "Job" | "Deployment" | "StatefulSet" => &doc["spec"]["template"]["spec"],
        _ => return,
    };
    assert_eq!(
        pod["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true),
        "{}",
        path.display()
    );
    for container in pod["containers"].as_sequence().expect("containers") {
        if kind == "Deployment" {
            assert!(
                container["readinessProbe"]["grpc"]["port"].is_number(),
                "{}: services are probed with the gRPC health check",
                path.display()
            );
            // Readiness asks for the service itself (NOT_SERVING while Cassandra or Kafka is
            // away); liveness for `liveness`, which stays SERVING: a restart cures neither.
            let ready = container["readinessProbe"]["grpc"]["service"]
                .as_str()
                .unwrap_or_default();
            assert!(
                ready.starts_with("scanloop.") && ready.ends_with("Service"),
                "{}: readiness probes the service's health name, not {ready:?}",
                path.display()
            );
            assert_eq!(
                container["livenessProbe"]["grpc"]["service"].as_str(),
                Some("liveness"),
                "{}",
                path.display()
            );
            check_access_wiring(pod, container, path);
        }
        for env in container["env"].as_sequence().into_iter().flatten() {
            let name = env["name"].as_str().unwrap_or_default();
            if name.ends_with("_SECRET") {
                assert!(
                    env.get("value").is_none()
                        && env["valueFrom"]["secretKeyRef"]["name"].is_string(),
                    "{}: {name} comes from a Secret, never a literal",
                    path.display()
                );
            }
        }
        let security = &container["securityContext"];
        assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
        assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
        assert!(container["resources"]["limits"]["memory"].is_string());
    }
}

/// A service's Deployment: token keys and TLS files from mounted Secrets, and probes on the
/// plaintext health port (the kubelet's gRPC probe cannot speak TLS).
fn check_access_wiring(pod: &Value, container: &Value, path: &Path) {
    let env = |name: &str| -> String {
        container["env"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|env| env["name"].as_str() == Some(name))
            .and_then(|env| env["value"].as_str())
            .unwrap_or_else(|| panic!("{}: sets {name}", path.display()))
            .to_owned()
    };
    for (variable, secret) in [
        ("SCANLOOP_AUTH_JWKS", "scanloop-auth"),
        ("SCANLOOP_TLS_CERT", "scanloop-tls"),
        ("SCANLOOP_TLS_KEY", "scanloop-tls"),
    ] {
        let file = env(variable);
        let mount = container["volumeMounts"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|mount| {
                mount["mountPath"]
                    .as_str()
                    .is_some_and(|dir| file.starts_with(&format!("{dir}/")))
            })
            .unwrap_or_else(|| panic!("{}: {variable}={file} is on no mount", path.display()));
        let volume = pod["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|volume| volume["name"] == mount["name"])
            .unwrap_or_else(|| panic!("{}: no volume {:?}", path.display(), mount["name"]));
        assert_eq!(
            volume["secret"]["secretName"].as_str(),
            Some(secret),
            "{}: {variable} comes from the Secret {secret}",
            path.display()
        );
    }
    let health_port: u64 = env("SCANLOOP_HEALTH_ADDR")
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("{}: SCANLOOP_HEALTH_ADDR has a port", path.display()));
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            container[probe]["grpc"]["port"].as_u64(),
            Some(health_port),
            "{}: {probe} uses the plaintext health port",
            path.display()
        );
    }
}

/// Consumers are told (docs/events.md) to take the descriptor set from the image at this path.
#[test]
fn image_ships_the_event_contracts() {
    let dockerfile = std::fs::read_to_string(repo().join("deploy/docker/Dockerfile")).unwrap();
    let shipped = scanloop_proto::SHIPPED_DESCRIPTOR_SET;
    assert!(repo().join(shipped).is_file(), "{shipped} is missing");
    assert!(
        dockerfile.contains(&format!(
            "COPY {shipped} /usr/share/scanloop/scanloop.binpb"
        )),
        "the image does not ship {shipped} at /usr/share/scanloop/scanloop.binpb"
    );
}
