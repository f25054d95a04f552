use std::path::Path;

use rcgen::{CertificateParams, KeyPair};

use super::*;

/// A self-signed certificate for `localhost` and its key, written as `<name>.pem` and `<name>.key`.
fn pair(dir: &Path, name: &str) -> (TlsFiles, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let files = TlsFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    (files, cert.der().to_vec())
}

/// A fresh directory under the system's temp dir, unique to this process and test.
fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ttsd-tls-unit-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn presented(cert: &ReloadingCert) -> Vec<u8> {
    cert.current.read().unwrap().cert[0].to_vec()
}

#[test]
fn problems_at_start_name_the_file() {
    let dir = temp_dir("start");
    let (one, _) = pair(&dir, "one");
    let (two, _) = pair(&dir, "two");

    let missing = TlsFiles {
        cert: dir.join("absent.pem"),
        key: one.key.clone(),
    };
    let error = ReloadingCert::load(ListenerKind::public, missing).unwrap_err();
    assert!(error.to_string().contains("absent.pem"), "{error}");

    let swapped = TlsFiles {
        cert: one.cert.clone(),
        key: two.key.clone(),
    };
    let error = ReloadingCert::load(ListenerKind::admin, swapped).unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(error, TlsError::Mismatch { .. }) && text.contains("one.pem") && text.contains("two.key"),
        "{text}"
    );

    let not_a_key = TlsFiles {
        cert: one.cert.clone(),
        key: one.cert.clone(),
    };
    let error = ReloadingCert::load(ListenerKind::public, not_a_key).unwrap_err();
    assert!(matches!(error, TlsError::Key { .. }), "{error}");
}

#[test]
fn a_reload_takes_new_files_and_a_failed_one_keeps_the_current_certificate() {
    let dir = temp_dir("reload");
    let (files, first) = pair(&dir, "live");
    let cert = ReloadingCert::load(ListenerKind::public, files.clone()).unwrap();
    assert_eq!(presented(&cert), first);

    let (_, second) = pair(&dir, "live");
    cert.reload().unwrap();
    assert_eq!(presented(&cert), second);

    std::fs::write(&files.cert, "no PEM here\n").unwrap();
    let error = cert.reload().unwrap_err();
    assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");
    assert_eq!(presented(&cert), second, "the previous certificate stays");
}
