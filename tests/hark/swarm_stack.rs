//! The gateway as a replicated Swarm service, deployed as the README tells an operator:
//! `hark keys`, `docker secret create`, `hark build --gateway-image` and
//! `docker stack deploy -c deploy/swarm/stack.yml`. Three gateway replicas share the
//! stack's PostgreSQL: each serves the stack's functions, each accepts the one admin
//! token made offline (none mints its own), a function deployed through one is run by the
//! others, the database password is nowhere in the service's definition, and a rolling
//! update replaces every replica while the token and the deployment carry over.
//!
//! No registry is reachable here, so the test builds a stand-in for the official
//! `postgres:15` image from the host's PostgreSQL: the same variables
//! (`POSTGRES_USER`, `POSTGRES_DB`, `POSTGRES_PASSWORD_FILE`) and data directory. The
//! routing mesh needs IPVS, which this kernel lacks, so each replica is reached at its
//! address on `docker_gwbridge`, which the host can reach.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::contract::{docker, swarm_fixture};
use crate::gateway_image::{build_gateway_image, docker_ok};
use crate::tokens::status_at;
use crate::util::{hark_bin, register_secret};

/// The five secrets the stack file names, under the test's prefix.
const SECRETS: [&str; 5] = ["store", "db-password", "jwt", "admin-token", "secret"];

/// Removes the stack, its volumes, secrets and images, whether the test passed or not.
struct Cleanup {
    stack: String,
    prefix: String,
    images: Vec<String>,
    /// Volumes the gateway replicas were given (anonymous ones outlive their containers).
    volumes: BTreeSet<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        docker(&["stack", "rm", &self.stack]);
        let label = format!("label=com.docker.stack.namespace={}", self.stack);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !docker(&["ps", "-aq", "--filter", &label]).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
        }
        let db_volume = format!("{}_db", self.stack);
        for volume in self.volumes.iter().chain([&db_volume]) {
            docker(&["volume", "rm", "-f", volume]);
        }
        for name in SECRETS {
            docker(&["secret", "rm", &format!("{}_{name}", self.prefix)]);
        }
        for _ in 0..20 {
            if docker(&["network", "ls", "-q", "--filter", &label]).is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        for image in &self.images {
            docker(&["rmi", "-f", image]);
        }
    }
}

/// Builds `tag`: the host's PostgreSQL server and `initdb` with their libraries, busybox,
/// and an entrypoint that does what the official image does with the stack's variables.
fn build_postgres_image(tag: &str) {
    let context = tempfile::tempdir().unwrap();
    let script = r#"
set -euo pipefail
root="$1/root"
bindir=$(dirname "$(readlink -f "$(command -v initdb)")")
share=$("$bindir/pg_config" --sharedir)
pkglib=$("$bindir/pg_config" --pkglibdir)
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$1/data"
cp --parents -L "$bindir/postgres" "$bindir/initdb" "$root"
cp -r --parents "$share" "$pkglib" /usr/share/zoneinfo "$root"
cp -L "$(command -v busybox)" "$root/bin/busybox"
for f in "$bindir/postgres" "$bindir/initdb" "$pkglib"/*.so "$root/bin/busybox"; do
  ldd "$f" 2>/dev/null | grep -o '/[^ ]*' || true
done | sort -u | while read -r lib; do cp --parents -L "$lib" "$root"; done
printf 'root:x:0:0::/:/bin/sh\npostgres:x:999:999::/var/lib/postgresql:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\npostgres:x:999:\n' > "$root/etc/group"
cat > "$1/entrypoint.sh" <<'EOF'
set -e
PGDATA=/var/lib/postgresql/data
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$POSTGRES_PASSWORD_FILE" \
    -A scram-sha-256 --locale=C -E UTF8 > /dev/null
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  echo "CREATE DATABASE \"$POSTGRES_DB\"" | postgres --single -D "$PGDATA" postgres > /dev/null
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp
EOF
cat > "$1/Dockerfile" <<EOF
FROM scratch
COPY root/ /
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["/bin/busybox", "chmod", "1777", "/tmp"]
COPY --chown=999:999 data/ /var/lib/postgresql/data/
COPY entrypoint.sh /entrypoint.sh
ENV PATH=/bin:$bindir TZ=UTC LANG=C
USER 999:999
ENTRYPOINT ["/bin/sh", "/entrypoint.sh"]
EOF
"#;
    let made = Command::new("bash")
        .args(["-c", script, "bash"])
        .arg(context.path())
        .output()
        .expect("run bash");
    assert!(
        made.status.success(),
        "making the PostgreSQL image's context: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    docker_ok(&[
        "build",
        "-q",
        "-t",
        tag,
        &context.path().display().to_string(),
    ]);
}

/// The stack's running gateway containers: (container id, address on docker_gwbridge).
fn replicas(stack: &str) -> Vec<(String, String)> {
    let label = format!("label=com.docker.swarm.service.name={stack}_gateway");
    let running: BTreeSet<String> = docker(&["ps", "-q", "--no-trunc", "--filter", &label])
        .lines()
        .map(str::to_owned)
        .collect();
    docker(&[
        "network",
        "inspect",
        "docker_gwbridge",
        "--format",
        "{{range $id, $c := .Containers}}{{$id}} {{$c.IPv4Address}}\n{{end}}",
    ])
    .lines()
    .filter_map(|line| line.split_once(' '))
    .filter(|(id, _)| running.contains(*id))
    .filter_map(|(id, addr)| {
        let ip = addr.split('/').next()?;
        Some((id.to_owned(), format!("http://{ip}:8080")))
    })
    .collect()
}

/// What the stack's services said, for failure messages.
fn stack_logs(stack: &str) -> String {
    let mut out = String::new();
    for service in ["gateway", "db"] {
        let logs = Command::new("docker")
            .args(["service", "logs", "--raw", &format!("{stack}_{service}")])
            .output()
            .expect("run the docker CLI");
        out += &format!(
            "--- {service}:\n{}{}",
            String::from_utf8_lossy(&logs.stdout),
            String::from_utf8_lossy(&logs.stderr)
        );
    }
    out += &docker(&["service", "ps", "--no-trunc", &format!("{stack}_gateway")]);
    out
}

/// Waits until `n` gateway replicas run and each answers `/healthz`; their ids and URLs.
/// Replicas that are not among `except` (ones a rolling update replaced) only.
async fn healthy_replicas(
    client: &reqwest::Client,
    stack: &str,
    n: usize,
    except: &BTreeSet<String>,
) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let found: Vec<_> = replicas(stack)
            .into_iter()
            .filter(|(id, _)| !except.contains(id))
            .collect();
        let mut healthy = 0;
        for (_, url) in &found {
            let up = client.get(format!("{url}/healthz")).send().await;
            healthy += usize::from(matches!(&up, Ok(r) if r.status() == 200));
        }
        if found.len() == n && healthy == n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{healthy} of {n} gateway replicas healthy ({found:?}):\n{}",
            stack_logs(stack)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The volumes of container `id` (the gateway's data directory is an anonymous one,
/// which outlives the container).
fn volumes_of(id: &str) -> Vec<String> {
    docker(&[
        "inspect",
        "--format",
        "{{range .Mounts}}{{if eq .Type \"volume\"}}{{.Name}} {{end}}{{end}}",
        id,
    ])
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// A port no one listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `POST url/function/FUNCTION` with `body`: the answer's status and text.
async fn call(
    client: &reqwest::Client,
    url: &str,
    function: &str,
    body: &str,
) -> reqwest::Result<(u16, String)> {
    let answer = client
        .post(format!("{url}/function/{function}"))
        .body(body.to_owned())
        .send()
        .await?;
    Ok((answer.status().as_u16(), answer.text().await?))
}

/// Waits until the replica at `url` runs `function` (deployed through another replica), a
/// function that prints its host's name, and checks that it ran in replica `id`'s own
/// container. When another container answers, or none does, the replica may have been
/// replaced at the same address: the message says why it went (its state, health checks
/// included, and the tasks' history).
async fn served_by(client: &reqwest::Client, stack: &str, id: &str, url: &str, function: &str) {
    let why = || {
        let inspected = Command::new("docker")
            .args(["inspect", "--format", "{{json .State}}", id])
            .output()
            .expect("run the docker CLI");
        format!(
            "{id}'s state: {}{}\n{}",
            String::from_utf8_lossy(&inspected.stdout),
            String::from_utf8_lossy(&inspected.stderr),
            stack_logs(stack)
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = match call(client, url, function, "").await {
            Ok((200, text)) => {
                let answer = text.trim();
                assert!(
                    answer == &id[..12],
                    "{url} was replica {id}, but {answer} answered; {}",
                    why()
                );
                return;
            }
            Ok((status, text)) => format!("{status} {text}"),
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "{url} (replica {id}) never served {function}: {last}; {}",
            why()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_gateway_replicas_share_one_postgres_and_survive_a_rolling_update() {
    if swarm_fixture().is_none() {
        return;
    }
    let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let stack = format!("hark-test-{run}");
    let gateway_image = format!("hark/gateway:{run}");
    let postgres_image = format!("hark-test/postgres:{run}");
    let mut cleanup = Cleanup {
        stack: stack.clone(),
        prefix: stack.clone(),
        images: vec![gateway_image.clone(), postgres_image.clone()],
        volumes: BTreeSet::new(),
    };

    // The operator's steps, in the README's order.
    let keys = tempfile::tempdir().unwrap();
    let made = Command::new(hark_bin())
        .arg("keys")
        .arg(keys.path())
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let admin = std::fs::read_to_string(keys.path().join("admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    register_secret(&admin);
    let password = uuid::Uuid::new_v4().simple().to_string();
    register_secret(&password);
    let secret_files = [
        ("jwt", keys.path().join("jwt.key")),
        ("admin-token", keys.path().join("admin-token")),
        ("secret", keys.path().join("secret.key")),
        ("db-password", keys.path().join("db-password")),
        ("store", keys.path().join("store")),
    ];
    std::fs::write(&secret_files[3].1, &password).unwrap();
    std::fs::write(
        &secret_files[4].1,
        format!("postgres://hark:{password}@db:5432/hark"),
    )
    .unwrap();
    for (name, file) in &secret_files {
        docker_ok(&[
            "secret",
            "create",
            &format!("{stack}_{name}"),
            &file.display().to_string(),
        ]);
    }
    build_gateway_image(&run);
    build_postgres_image(&postgres_image);
    let stack_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/swarm/stack.yml");
    let deployed = Command::new("docker")
        .args(["stack", "deploy", "--resolve-image", "never", "-c"])
        .arg(&stack_file)
        .arg(&stack)
        .env("HARK_GATEWAY_IMAGE", &gateway_image)
        .env("HARK_POSTGRES_IMAGE", &postgres_image)
        .env("HARK_SECRETS", &stack)
        // Not reachable here (no routing mesh), but it must not take the host's 8080.
        .env("HARK_PORT", free_port().to_string())
        .output()
        .expect("run the docker CLI");
    assert!(
        deployed.status.success(),
        "docker stack deploy: {}",
        String::from_utf8_lossy(&deployed.stderr)
    );

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let first = healthy_replicas(&client, &stack, 3, &BTreeSet::new()).await;
    for (id, _) in &first {
        cleanup.volumes.extend(volumes_of(id));
    }

    // Each replica serves the stack's functions and accepts the admin token made offline.
    for (_, url) in &first {
        assert_eq!(
            call(&client, url, "shout", "hello").await.unwrap(),
            (200, "HELLO".to_owned()),
            "{}",
            stack_logs(&stack)
        );
        assert_eq!(
            status_at(&client, url, &admin).await,
            200,
            "{url}: {}",
            stack_logs(&stack)
        );
    }
    // None of them made an admin token of its own (which would revoke the others').
    let tokens: Vec<Value> = client
        .get(format!("{}/system/tokens", first[0].1))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0]["adminFile"], true, "{tokens:?}");
    assert!(tokens[0]["revokedAt"].is_null(), "{tokens:?}");

    // The database's password is in a secret, not in the service's definition.
    let inspected = docker_ok(&["service", "inspect", &format!("{stack}_gateway")]);
    assert!(!inspected.contains(&password), "{inspected}");

    // Deployed through one replica, run by each of the others in its own container.
    let deploy = client
        .post(format!("{}/system/functions", first[0].1))
        .bearer_auth(&admin)
        .json(&json!({ "service": "whoami", "envProcess": "hostname" }))
        .send()
        .await
        .unwrap();
    assert_eq!(deploy.status(), 202, "{}", deploy.text().await.unwrap());
    for (id, url) in &first[1..] {
        served_by(&client, &stack, id, url, "whoami").await;
    }

    // A rolling update, one replica at a time: the new replicas take the same token and
    // serve what was deployed before.
    let updated = Command::new("docker")
        .args(["service", "update", "--force", "--detach=true"])
        .arg(format!("{stack}_gateway"))
        .output()
        .expect("run the docker CLI");
    assert!(
        updated.status.success(),
        "{}",
        String::from_utf8_lossy(&updated.stderr)
    );
    let old: BTreeSet<String> = first.iter().map(|(id, _)| id.clone()).collect();
    let second = healthy_replicas(&client, &stack, 3, &old).await;
    for (id, url) in &second {
        cleanup.volumes.extend(volumes_of(id));
        served_by(&client, &stack, id, url, "whoami").await;
        assert_eq!(
            status_at(&client, url, &admin).await,
            200,
            "{url}: {}",
            stack_logs(&stack)
        );
    }
}
