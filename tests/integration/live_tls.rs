//! `pgreach live --keylog`: a PostgreSQL with TLS on loopback, a client
//! that writes its TLS key log while pgreach runs, and the session's real
//! outcome read through the encryption from the growing file.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::project_root;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn sh(cmd: &str) -> String {
    let out = Command::new("bash").args(["-c", cmd]).output().expect("bash");
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn live_decrypts_with_a_key_log_written_while_it_runs() {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root || !Path::new(PG_BIN).join("postgres").exists() {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root with PostgreSQL 15");
        eprintln!("SKIPPED live --keylog: needs root and PostgreSQL 15");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = format!("/tmp/pgreach-test-tls-{port}");
    let data = format!("{dir}/data");
    sh(&format!("rm -rf {dir} && mkdir -p {dir} && chown postgres {dir}"));
    sh(&format!("su postgres -c '{PG_BIN}/initdb -D {data} -A trust -U postgres' >/dev/null"));
    sh(&format!(
        "cd {data} && openssl req -x509 -newkey rsa:2048 -nodes -keyout server.key -out server.crt -days 2 \
         -subj /CN=pgreach-live 2>/dev/null && chown postgres server.key server.crt && chmod 600 server.key && \
         printf \"listen_addresses = '127.0.0.1'\\nport = {port}\\nunix_socket_directories = '{dir}'\\nssl = on\\n\" \
         >> postgresql.conf && su postgres -c '{PG_BIN}/pg_ctl -D {data} -l {dir}/log -w start' >/dev/null"
    ));
    let stop = || {
        let _ = Command::new("su")
            .args(["postgres", "-c", &format!("{PG_BIN}/pg_ctl -D {data} -m immediate stop")])
            .output();
        let _ = std::fs::remove_dir_all(&dir);
    };
    let keylog = format!("{dir}/keys.log");
    std::fs::write(&keylog, "").unwrap();
    let mut live = Command::new(env!("CARGO_BIN_EXE_pgreach"))
        .args(["live", "-i", "lo", "-p", &port.to_string(), "--format", "json", "--keylog", &keylog])
        .env_remove("SSLKEYLOGFILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pgreach live");
    std::thread::sleep(Duration::from_millis(1500));
    let client = project_root().join("xtask/src/record/pg_tls_client.py");
    let said = sh(&format!("python3 {} 127.0.0.1 {port} postgres no_such_db - 1.3 - {keylog}", client.display()));
    std::thread::sleep(Duration::from_millis(1500));
    sh(&format!("kill -INT {}", live.id()));
    let mut report = String::new();
    live.stdout.take().unwrap().read_to_string(&mut report).unwrap();
    let _ = live.wait();
    stop();
    assert!(said.starts_with("error 3D000"), "the client saw {said:?}");
    let doc: Value = serde_json::from_str(&report).unwrap_or_else(|e| panic!("{e}: {report}"));
    let attempts = doc["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{report}");
    let a = &attempts[0];
    assert_eq!(a["pg"]["tls"]["decryption"], "decrypted", "{a}");
    assert_eq!(a["outcome"], "database_missing", "{a}");
    assert_eq!(a["pg"]["error"]["code"], "3D000");
}
