//! Every Kubernetes manifest under deploy/kubernetes parses, and the values that must agree do:
//! the ConfigMap is a valid houndd configuration whose every variable exists in the schema; the
//! termination grace covers the drain; the ops port, the container port and the probes match;
//! the socket lives on a volume both containers mount; the pool fits its memory limit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use houndpool::cgroup::{CgroupVersion, ContainerLimits};
use houndpool::daemon::settings::{env_names, Config};
use serde_norway::Value;

fn manifest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("deploy")
        .join("kubernetes")
}

/// Every YAML document of every manifest, with its file name.
fn documents() -> Vec<(String, Value)> {
    let mut docs = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifest_dir())
        .expect("deploy/kubernetes exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let v = <Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if !v.is_null() {
                docs.push((f.file_name().unwrap().to_string_lossy().into_owned(), v));
            }
        }
    }
    docs
}

fn kind<'a>(docs: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|(_, v)| v["kind"].as_str() == Some(kind))
        .map(|(_, v)| v)
        .collect()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

/// Kubernetes quantity → bytes ("2Gi", "512Mi", "1G", "1000").
fn bytes(q: &str) -> u64 {
    let (num, mult) = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("K", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ]
    .iter()
    .find_map(|(suffix, m)| q.strip_suffix(suffix).map(|n| (n, *m)))
    .unwrap_or((q, 1));
    num.parse::<u64>().unwrap() * mult
}

struct Pod<'a> {
    spec: &'a Value,
    houndd: &'a Value,
    others: Vec<&'a Value>,
}

fn pod(deployment: &Value) -> Pod<'_> {
    let spec = &deployment["spec"]["template"]["spec"];
    let all: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec[*k].as_sequence())
        .flatten()
        .collect();
    let houndd = *all
        .iter()
        .find(|c| {
            c["command"]
                .as_sequence()
                .is_some_and(|cmd| cmd.first().and_then(Value::as_str) == Some("houndd"))
        })
        .expect("a container runs houndd");
    let others = all
        .into_iter()
        .filter(|c| c["name"] != houndd["name"])
        .collect();
    Pod {
        spec,
        houndd,
        others,
    }
}

/// The environment houndd sees: the ConfigMap's data, then the container's own `env`
/// (which wins), with `$(VAR)` references expanded and fieldRefs given test values.
fn houndd_env(pod: &Pod, configmaps: &[&Value]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for from in pod.houndd["envFrom"].as_sequence().into_iter().flatten() {
        let name = s(&from["configMapRef"]["name"]);
        let cm = configmaps
            .iter()
            .find(|c| c["metadata"]["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("envFrom names ConfigMap {name}, which no manifest defines"));
        for (k, v) in cm["data"].as_mapping().expect("ConfigMap data") {
            env.insert(s(k).to_string(), s(v).to_string());
        }
    }
    for e in pod.houndd["env"].as_sequence().into_iter().flatten() {
        let name = s(&e["name"]).to_string();
        let value = if let Some(v) = e["value"].as_str() {
            let mut v = v.to_string();
            for (k, val) in &env {
                v = v.replace(&format!("$({k})"), val);
            }
            v
        } else if e["valueFrom"]["fieldRef"]["fieldPath"].as_str() == Some("status.podIP") {
            "10.1.2.3".to_string()
        } else {
            assert!(
                e["valueFrom"]["secretKeyRef"].is_mapping(),
                "{name}: value, podIP fieldRef or secretKeyRef expected"
            );
            format!("secret-{name}")
        };
        env.insert(name, value);
    }
    env
}

#[test]
fn manifests_parse_and_agree_with_the_configuration_schema() {
    let docs = documents();
    let configmaps = kind(&docs, "ConfigMap");
    let deployments = kind(&docs, "Deployment");
    assert!(!deployments.is_empty(), "no Deployment");
    let schema = env_names();

    // Every HOUNDPOOL_* name in any ConfigMap is a configuration variable.
    for cm in &configmaps {
        for (k, _) in cm["data"].as_mapping().into_iter().flatten() {
            let k = s(k);
            assert!(
                schema.iter().any(|n| n == k),
                "ConfigMap variable {k} is not in the configuration schema"
            );
        }
    }

    for d in deployments {
        let pod = pod(d);
        let env = houndd_env(&pod, &configmaps);
        for k in env.keys() {
            assert!(
                schema.contains(k) || k.starts_with("AWS_") || k == "POD_IP",
                "houndd variable {k} is neither configuration nor an AWS credential"
            );
        }

        // The effective configuration is valid (the daemon would start with it).
        let config = Config::load("", env.clone()).unwrap_or_else(|e| panic!("{e}"));
        houndpool::daemon::config::prepare(config.clone()).unwrap();

        // Drain: termination grace ≥ drain grace + 1 s hound stop + 5 s flush + 4 s for the app.
        let grace = pod.spec["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds");
        let drain = config.daemon.drain_grace.as_secs_f64().ceil() as u64;
        let flush = houndpool::daemon::FLUSH_TIMEOUT.as_secs();
        assert!(
            grace >= drain + 1 + flush + 4,
            "terminationGracePeriodSeconds {grace} < drain grace {drain} + 1 + {flush} + 4"
        );

        // Ops: bound to the pod address, on the container port the probes use.
        let addr = config.ops.addr.expect("ops endpoint enabled");
        assert!(
            !addr.ip().is_loopback(),
            "kubelet probes cannot reach loopback"
        );
        let ports = pod.houndd["ports"].as_sequence().expect("ports");
        let ops = ports
            .iter()
            .find(|p| p["containerPort"].as_u64() == Some(u64::from(addr.port())))
            .unwrap_or_else(|| panic!("no containerPort {}", addr.port()));
        let port_name = ops["name"].as_str();
        for (probe, path) in [
            ("startupProbe", "/readyz"),
            ("readinessProbe", "/readyz"),
            ("livenessProbe", "/healthz"),
        ] {
            let get = &pod.houndd[probe]["httpGet"];
            assert_eq!(get["path"].as_str(), Some(path), "{probe} path");
            let p = &get["port"];
            assert!(
                p.as_u64() == Some(u64::from(addr.port()))
                    || (p.as_str().is_some() && p.as_str() == port_name),
                "{probe} port {p:?} is not the ops port {}",
                addr.port()
            );
        }

        // The socket lives on a volume that houndd and every other container mount there.
        let socket_dir = config.daemon.socket.parent().unwrap().to_str().unwrap();
        let mount = |c: &Value| -> Option<String> {
            c["volumeMounts"]
                .as_sequence()?
                .iter()
                .find(|m| m["mountPath"].as_str() == Some(socket_dir))
                .map(|m| s(&m["name"]).to_string())
        };
        let vol = mount(pod.houndd).expect("houndd mounts the socket directory");
        assert!(!pod.others.is_empty(), "no application container");
        for c in &pod.others {
            assert_eq!(
                mount(c).as_deref(),
                Some(vol.as_str()),
                "{} does not share the socket volume",
                s(&c["name"])
            );
        }
        let volume = pod.spec["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"].as_str() == Some(vol.as_str()))
            .expect("socket volume defined");
        assert!(
            volume["emptyDir"].is_mapping(),
            "the socket volume is an emptyDir"
        );

        // Hardening.
        let sc = &pod.houndd["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
        assert_eq!(sc["capabilities"]["drop"][0].as_str(), Some("ALL"));
        assert!(
            pod.houndd["restartPolicy"].as_str() == Some("Always")
                || pod.spec["containers"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .any(|c| c["name"] == pod.houndd["name"])
        );

        // Sizing (docs/KUBERNETES.md): the pool this container's limits give, and
        // reserve + n × (budget + rings) under the memory limit.
        let limit = bytes(s(&pod.houndd["resources"]["limits"]["memory"]));
        let cpus = s(&pod.houndd["resources"]["limits"]["cpu"])
            .parse::<f64>()
            .unwrap();
        let mut limits = ContainerLimits::unlimited(CgroupVersion::V2);
        limits.memory_limit = Some(limit);
        limits.cpu_quota_cores = Some(cpus);
        let (pool, _) = houndpool::daemon::config::pool_config_for(&config, &limits, 64).unwrap();
        let n = pool.hound_count() as u64;
        assert_eq!(
            n, 2,
            "docs/KUBERNETES.md works out 2 hounds for this Deployment"
        );
        let rings = pool.region_layout().memory_bytes() as u64;
        let budget = pool.hound_memory_budget;
        assert!(budget > 0, "hounds need a memory budget in a container");
        let defer = match pool.exhausted {
            houndpool::PoolExhaustedAction::Defer { limit } => limit as u64,
            _ => 0,
        };
        let reserve = config.pool.host_reserve_bytes;
        assert!(
            reserve >= 64 * (1 << 20) + defer * pool.max_evidence_bytes as u64,
            "host reserve {reserve} does not cover houndd and a full defer queue"
        );
        assert!(
            reserve + n * (budget + rings) <= limit,
            "{n} hounds × ({budget} + {rings}) + reserve {reserve} exceed the limit {limit}"
        );
        assert!(n as f64 <= cpus.ceil(), "more hounds than CPUs");
    }
}

#[test]
fn every_configuration_key_is_documented() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/CONFIGURATION.md"),
    )
    .unwrap();
    for k in houndpool::daemon::settings::KEYS {
        let row = format!("| `{}` | `{}` | `{}` |", k.key, k.env_name(), k.default);
        assert!(
            doc.contains(&row),
            "docs/CONFIGURATION.md lacks the row {row}"
        );
    }
}

#[test]
fn the_pod_is_hardened_budgeted_and_fenced() {
    let docs = documents();
    let deployments = kind(&docs, "Deployment");
    for d in &deployments {
        let pod = pod(d);
        assert_eq!(
            pod.spec["automountServiceAccountToken"].as_bool(),
            Some(false),
            "no service-account token in the pod"
        );
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            let t = pod.houndd[probe]["timeoutSeconds"].as_u64();
            let period = pod.houndd[probe]["periodSeconds"].as_u64().unwrap_or(10);
            assert!(
                t.is_some_and(|t| t >= 1 && t <= period),
                "{probe}: timeoutSeconds {t:?} (period {period})"
            );
        }
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        let selects = |sel: &Value| {
            sel["matchLabels"]
                .as_mapping()
                .is_some_and(|m| m.iter().all(|(k, v)| &labels[s(k)] == v))
        };
        let pdbs = kind(&docs, "PodDisruptionBudget");
        assert!(
            pdbs.iter().any(|p| selects(&p["spec"]["selector"])),
            "no PodDisruptionBudget selects the Deployment's pods"
        );
        let policies = kind(&docs, "NetworkPolicy");
        let policy = policies
            .iter()
            .find(|p| selects(&p["spec"]["podSelector"]))
            .expect("a NetworkPolicy selects the Deployment's pods");
        let types: Vec<&str> = policy["spec"]["policyTypes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(s)
            .collect();
        assert!(types.contains(&"Egress"));
        // Egress: the S3 endpoint's port and DNS, nothing else.
        let env = houndd_env(&pod, &kind(&docs, "ConfigMap"));
        let endpoint = &env["HOUNDPOOL_COLD_ENDPOINT"];
        let (scheme, rest) = endpoint.split_once("://").unwrap();
        let authority = rest.split('/').next().unwrap();
        let s3_port: u16 = match authority.rsplit_once(':') {
            Some((_, p)) => p.parse().unwrap(),
            None if scheme == "https" => 443,
            None => 80,
        };
        let mut ports: Vec<u64> = policy["spec"]["egress"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|r| r["ports"].as_sequence().cloned().unwrap_or_default())
            .map(|p| p["port"].as_u64().expect("numeric egress port"))
            .collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports, vec![53, u64::from(s3_port)]);
    }
    // The image the docs use: multi-stage, non-root, houndd and hound only.
    let dockerfile = std::fs::read_to_string(manifest_dir().join("../Dockerfile")).unwrap();
    assert!(
        dockerfile.matches("\nFROM ").count() + usize::from(dockerfile.starts_with("FROM ")) >= 2
    );
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with("0") && !user.starts_with("root"),
        "USER {user}"
    );
    let copied: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY --from="))
        .collect();
    assert_eq!(copied.len(), 2, "{copied:?}");
    assert!(copied.iter().any(|l| l.contains("/houndd ")));
    assert!(copied.iter().any(|l| l.contains("/hound ")));
}
