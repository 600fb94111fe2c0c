//! Bodies checked field for field against firecracker.yaml's definitions.

use super::super::fake_api::{firecracker_like, FakeApi};
use super::*;
use serde_json::{json, Value};

fn to_json(v: &impl Serialize) -> Value {
    serde_json::to_value(v).expect("encode")
}

#[test]
fn boot_source_shape() {
    let b = BootSource { kernel_image_path: "/vmlinux".into(), initrd_path: None, boot_args: "console=ttyS0".into() };
    assert_eq!(to_json(&b), json!({"kernel_image_path": "/vmlinux", "boot_args": "console=ttyS0"}));
    let b = BootSource { initrd_path: Some("/initrd".into()), ..b };
    assert_eq!(to_json(&b), json!({"kernel_image_path": "/vmlinux", "initrd_path": "/initrd", "boot_args": "console=ttyS0"}));
}

#[test]
fn drive_shape() {
    let d = Drive { drive_id: "vda".into(), path_on_host: "/rootfs".into(), is_root_device: true, is_read_only: true };
    assert_eq!(to_json(&d), json!({"drive_id": "vda", "path_on_host": "/rootfs", "is_root_device": true, "is_read_only": true}));
}

#[test]
fn machine_config_shape() {
    let m = MachineConfig { vcpu_count: 2, mem_size_mib: 512, smt: Some(false) };
    assert_eq!(to_json(&m), json!({"vcpu_count": 2, "mem_size_mib": 512, "smt": false}));
    assert_eq!(to_json(&MachineConfig { smt: None, ..m }), json!({"vcpu_count": 2, "mem_size_mib": 512}));
}

#[test]
fn network_interface_shape() {
    let n = NetworkInterface { iface_id: "eth0".into(), host_dev_name: "tap0".into(), guest_mac: Some("06:00:ac:10:00:02".into()) };
    assert_eq!(to_json(&n), json!({"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:ac:10:00:02"}));
    assert_eq!(to_json(&NetworkInterface { guest_mac: None, ..n }), json!({"iface_id": "eth0", "host_dev_name": "tap0"}));
}

#[test]
fn vsock_shape_has_no_deprecated_id() {
    let v = Vsock { guest_cid: 3, uds_path: "/run/vsock.sock".into() };
    assert_eq!(to_json(&v), json!({"guest_cid": 3, "uds_path": "/run/vsock.sock"}));
}

#[test]
fn action_and_logger_shapes() {
    for (a, name) in [
        (ActionType::InstanceStart, "InstanceStart"),
        (ActionType::SendCtrlAltDel, "SendCtrlAltDel"),
        (ActionType::FlushMetrics, "FlushMetrics"),
    ] {
        assert_eq!(to_json(&Action { action_type: a }), json!({ "action_type": name }));
    }
    let l = Logger { log_path: Some("/run/fc.log".into()), level: Some(LogLevel::Warning), show_level: Some(true), show_log_origin: None };
    assert_eq!(to_json(&l), json!({"log_path": "/run/fc.log", "level": "Warning", "show_level": true}));
}

#[test]
fn instance_info_decodes() {
    let raw = r#"{"app_name":"Firecracker","id":"anonymous-instance","state":"Not started","vmm_version":"1.10.1"}"#;
    let i: InstanceInfo = serde_json::from_str(raw).expect("decode");
    assert_eq!(i.state, "Not started");
}

fn plan() -> BootPlan {
    BootPlan {
        logger: Some(Logger { log_path: None, level: Some(LogLevel::Info), show_level: None, show_log_origin: None }),
        boot_source: BootSource { kernel_image_path: "/vmlinux".into(), initrd_path: None, boot_args: "x".into() },
        drives: vec![
            Drive { drive_id: "vda".into(), path_on_host: "/rootfs".into(), is_root_device: true, is_read_only: true },
            Drive { drive_id: "vdb".into(), path_on_host: "/runtime".into(), is_root_device: false, is_read_only: false },
        ],
        machine: MachineConfig { vcpu_count: 1, mem_size_mib: 128, smt: None },
        network: vec![NetworkInterface { iface_id: "eth0".into(), host_dev_name: "tap0".into(), guest_mac: None }],
        vsock: Some(Vsock { guest_cid: 3, uds_path: "/run/v.sock".into() }),
    }
}

#[test]
fn configure_sends_every_request_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeApi::start(dir.path(), firecracker_like);
    let api = ApiClient::new(&fake.socket, Duration::from_secs(2));
    assert_eq!(api.instance_info().expect("info").app_name, "Firecracker");
    api.configure(&plan()).expect("configure");
    api.action(ActionType::InstanceStart).expect("start");
    let got: Vec<(String, String)> = fake.requests().into_iter().map(|r| (r.method, r.path)).collect();
    let want = [
        ("GET", "/"),
        ("PUT", "/logger"),
        ("PUT", "/boot-source"),
        ("PUT", "/drives/vda"),
        ("PUT", "/drives/vdb"),
        ("PUT", "/machine-config"),
        ("PUT", "/network-interfaces/eth0"),
        ("PUT", "/vsock"),
        ("PUT", "/actions"),
    ];
    assert_eq!(got, want.map(|(m, p)| (m.to_string(), p.to_string())));
    let last: Value = serde_json::from_str(&fake.requests()[8].body).expect("json");
    assert_eq!(last, json!({"action_type": "InstanceStart"}));
}

#[test]
fn a_fault_names_the_request_and_stops_the_sequence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeApi::start(dir.path(), |r| {
        if r.path == "/drives/vdb" {
            (400, r#"{"fault_message":"Unable to create the block device: No such file or directory"}"#.into())
        } else {
            (204, String::new())
        }
    });
    let api = ApiClient::new(&fake.socket, Duration::from_secs(2));
    let err = api.configure(&plan()).expect_err("fault");
    match &err {
        FirecrackerError::Api { method, path, status, fault } => {
            assert_eq!((*method, path.as_str(), *status), ("PUT", "/drives/vdb", 400));
            assert!(fault.contains("Unable to create the block device"));
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(err.to_string().starts_with("Firecracker API PUT /drives/vdb answered 400: Unable"), "{err}");
    assert_eq!(fake.requests().last().map(|r| r.path.clone()).as_deref(), Some("/drives/vdb"));
}

#[test]
fn a_non_json_fault_is_kept_verbatim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeApi::start(dir.path(), |_| (500, "boom".into()));
    let err = ApiClient::new(&fake.socket, Duration::from_secs(2)).action(ActionType::FlushMetrics).expect_err("fault");
    assert!(matches!(err, FirecrackerError::Api { status: 500, ref fault, .. } if fault == "boom"), "{err:?}");
}

#[test]
fn a_missing_socket_is_a_transport_error() {
    let api = ApiClient::new("/nonexistent/clawkeep/api.sock", Duration::from_millis(100));
    let err = api.instance_info().expect_err("no socket");
    assert!(matches!(err, FirecrackerError::Transport { method: "GET", .. }), "{err:?}");
}
