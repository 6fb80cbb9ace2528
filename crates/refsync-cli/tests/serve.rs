//! `refsync serve`, the real binary: listening line, a webhook end to end to the ledger,
//! graceful shutdown on SIGTERM; a broken config exits 1 with positions.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use refsync::{NewUser, ReferralKey, ReferrerRef};
use refsync_ledger::{Ledger, NewCampaign};

const HOOK_TOKEN: &str = "hook-token-5b1e7c";

fn refsync() -> Command {
    Command::new(env!("CARGO_BIN_EXE_refsync"))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A minimal HTTP/1.1 request over loopback: (status, body).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn config(dir: &Path, campaign: i64) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_token = "admin-token-9d2f"

[store]
url = "sqlite://{store}"

[platform]
type = "ledger"
database_url = "sqlite://{ledger}"

[[instances]]
name = "crm"
connector = "generic-webhook"
campaign = "{campaign}"

[instances.settings.auth]
type = "token"
header = "X-Hook-Token"
token = "${{env:HOOK_TOKEN}}"

[instances.settings.events]
delivery_id = "/id"
object_kind = {{ value = "deal" }}
object_id = "/deal/id"
change = "/event"
change_types = {{ "deal.won" = "status_changed" }}
status = "/deal/status"
referral_code = "/deal/referral_code"

[[instances.rules]]
rule = "deal_won"
"#,
        store = dir.join("refsync.db").display(),
        ledger = dir.join("ledger.db").display(),
    )
}

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn start(config_path: &Path) -> Server {
    let mut child = refsync()
        .args(["serve", "-c", config_path.to_str().unwrap()])
        .env("HOOK_TOKEN", HOOK_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Server { child, addr }
}

#[test]
fn serve_takes_a_webhook_to_a_qualification_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let ledger_url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let (ledger, code) = rt.block_on(async {
        let l = Ledger::open(&ledger_url).await.unwrap();
        let c = l
            .create_campaign(&NewCampaign {
                name: "Serve test".into(),
                link_base_url: None,
            })
            .await
            .unwrap();
        let alice = l
            .add_user(&NewUser {
                campaign_id: c.id.to_string(),
                first_name: "Alice".into(),
                email: "alice@example.com".into(),
                referrer: None,
                meta: Default::default(),
                notify: false,
            })
            .await
            .unwrap();
        let bob = l
            .add_user(&NewUser {
                campaign_id: c.id.to_string(),
                first_name: "Bob".into(),
                email: "bob@example.com".into(),
                referrer: Some(ReferrerRef::Code(alice.code)),
                meta: Default::default(),
                notify: false,
            })
            .await
            .unwrap();
        (l, (c.id, bob.code))
    });
    let (campaign, bob_code) = code;
    let path = dir.path().join("refsync.toml");
    std::fs::write(&path, config(dir.path(), campaign)).unwrap();
    let mut server = start(&path);

    assert_eq!(http(&server.addr, "GET", "/healthz", &[], b"").0, 200);
    let body = format!(
        r#"{{"id":"evt-1","event":"deal.won","deal":{{"id":"42","status":"won","referral_code":"{bob_code}"}}}}"#
    );
    let headers = [
        ("Content-Type", "application/json"),
        ("X-Hook-Token", HOOK_TOKEN),
    ];
    let (status, answer) = http(
        &server.addr,
        "POST",
        "/hooks/crm",
        &headers,
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    // A redelivery is acknowledged and deduplicated.
    let (status, answer) = http(
        &server.addr,
        "POST",
        "/hooks/crm",
        &headers,
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("duplicate"), "{answer}");
    // A wrong token: 401.
    let bad = [
        ("Content-Type", "application/json"),
        ("X-Hook-Token", "nope"),
    ];
    assert_eq!(
        http(&server.addr, "POST", "/hooks/crm", &bad, body.as_bytes()).0,
        401
    );

    let key = ReferralKey::Code {
        code: bob_code.clone(),
    };
    let mut qualified = false;
    for _ in 0..600 {
        let user = rt.block_on(ledger.user(&key)).unwrap().unwrap();
        if user.qualified_at.is_some() {
            qualified = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(qualified, "the referral was not qualified");

    let pid = server.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let exit = server.child.wait().unwrap();
    let mut stderr = String::new();
    server
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(exit.code(), Some(0), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(
        !stderr.contains(HOOK_TOKEN),
        "a secret was logged:\n{stderr}"
    );
    assert!(
        !stderr.contains("admin-token-9d2f"),
        "a secret was logged:\n{stderr}"
    );

    // Nothing lost: one qualification; no delivery left unprocessed, no dead letter.
    let bob = rt.block_on(ledger.user(&key)).unwrap().unwrap();
    assert_eq!(rt.block_on(ledger.qualifications(bob.id)).unwrap().len(), 1);
    let out = refsync()
        .args(["dlq", "list", "-c", path.to_str().unwrap()])
        .env("HOOK_TOKEN", HOOK_TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no dead letters\n");

    // The manual path is idempotent: already qualified, nothing changed.
    let out = refsync()
        .args(["qualify", "-c", path.to_str().unwrap(), "--code", &bob_code])
        .env("HOOK_TOKEN", HOOK_TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already qualified"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(rt.block_on(ledger.qualifications(bob.id)).unwrap().len(), 1);
    rt.block_on(ledger.close());
}

#[test]
fn serve_with_a_broken_config_exits_1_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refsync.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\nbodylimit = 5\n\n[[instances]]\nname = \"crm\"\nconnector = \"pipedriv\"\n",
    )
    .unwrap();
    let out = refsync()
        .args(["serve", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let file = path.display().to_string();
    assert!(!text.contains("listening on"), "{text}");
    for want in [
        format!("{file}:3:1: unknown key `bodylimit`"),
        format!("{file}:7:13: unknown connector \"pipedriv\""),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
}
