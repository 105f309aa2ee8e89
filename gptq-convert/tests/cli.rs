//! The `gptq-convert` binary: a good conversion, and bad input ending in one
//! clear error line, a non-zero exit and no output file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("testdata")
        .join(name)
}

fn convert(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gptq-convert"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("gptq-convert runs")
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn assert_one_error_line(out: &Output, want: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error line expected: {err}");
    assert!(lines[0].starts_with("gptq-convert: error: "), "{err}");
    assert!(lines[0].contains(want), "'{want}' missing: {err}");
}

#[test]
fn converts_and_the_file_is_world_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tiny.gguf");
    let o = convert(&[
        fixture("tiny-scaled").as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--type".as_ref(),
        "q8_0".as_ref(),
        "--quiet".as_ref(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(files_in(tmp.path()), vec!["tiny.gguf"]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
}

#[test]
fn output_path_that_is_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("taken");
    std::fs::create_dir(&out).unwrap();
    let o = convert(&[
        fixture("tiny-scaled").as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert_one_error_line(&o, "taken");
    assert_eq!(files_in(tmp.path()), vec!["taken"]);
    assert!(files_in(&out).is_empty());
}

#[test]
fn unsupported_architecture_and_missing_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("llama");
    std::fs::create_dir(&src).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny-scaled").join("config.json")).unwrap(),
    )
    .unwrap();
    cfg["model_type"] = "llama".into();
    cfg["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
    std::fs::write(src.join("config.json"), cfg.to_string()).unwrap();
    let out = tmp.path().join("out.gguf");
    let o = convert(&[src.as_os_str(), "-o".as_ref(), out.as_os_str()]);
    assert_one_error_line(&o, "llama");
    assert!(!out.exists());

    let missing = tmp.path().join("nothing-here");
    let o = convert(&[missing.as_os_str(), "-o".as_ref(), out.as_os_str()]);
    assert_one_error_line(&o, "nothing-here");
    assert!(!out.exists());
}

#[test]
fn bad_type_is_a_usage_error() {
    let o = convert(&[
        fixture("tiny-scaled").as_os_str(),
        "-o".as_ref(),
        "x.gguf".as_ref(),
        "--type".as_ref(),
        "q3_k_xl".as_ref(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!Path::new("x.gguf").exists());
}

#[test]
fn mixes_and_the_mix_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mix.gguf");
    let run = |ty: &str, mix: bool| {
        let mut args = vec![
            fixture("tiny-scaled").into_os_string(),
            "-o".into(),
            out.clone().into_os_string(),
            "--type".into(),
            ty.into(),
            "--quiet".into(),
        ];
        if mix {
            args.push("--mix".into());
        }
        convert(&args.iter().map(|a| a.as_os_str()).collect::<Vec<_>>())
    };
    let o = run("q4_k_m", false);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run("q2_k", true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_file(&out).unwrap();
    // A flag that would do nothing is refused.
    assert_one_error_line(&run("f16", true), "no mix for f16");
    assert_one_error_line(&run("q4_k_m", true), "already");
    assert_eq!(files_in(tmp.path()), Vec::<String>::new());
}

/// The quality flags: refused where they would do nothing, and a bad
/// importance matrix named; no output file in any case.
#[test]
fn quality_flags_refused_where_they_do_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.gguf");
    let calib = fixture("text").join("calibration-small.txt");
    let imatrix = fixture("llama-quantize").join("tiny-scaled.imatrix");
    let dir = fixture("tiny-scaled");
    let bad = tmp.path().join("bad.imatrix");
    std::fs::write(&bad, [3u8, 0, 0, 0, 9]).unwrap();
    let cases: [(&[&str], &str); 7] = [
        (
            &["--type", "q4_0", "--method", "gptq"],
            "need a calibration text",
        ),
        (
            &["--type", "q4_0", "--act-order"],
            "--act-order is a GPTQ option",
        ),
        (
            &["--type", "q4_0", "--calib", "CALIB"],
            "--calib is used by",
        ),
        (
            &["--type", "f16", "--awq", "--calib", "CALIB"],
            "choose a quantized --type",
        ),
        (
            &["--type", "q8_0", "--imatrix", "IMATRIX"],
            "q8_0 takes no importance weights",
        ),
        (&["--type", "q4_0", "--imatrix", "BAD"], "bad.imatrix"),
        (
            &[
                "--type", "q4_0", "--method", "gptq", "--calib", "CALIB", "--damp", "0",
            ],
            "--damp 0",
        ),
    ];
    for (flags, want) in cases {
        let mut args: Vec<&std::ffi::OsStr> = vec![dir.as_os_str(), "-o".as_ref(), out.as_os_str()];
        for f in flags {
            args.push(match *f {
                "CALIB" => calib.as_os_str(),
                "IMATRIX" => imatrix.as_os_str(),
                "BAD" => bad.as_os_str(),
                f => f.as_ref(),
            });
        }
        let o = convert(&args);
        assert_one_error_line(&o, want);
        assert!(!out.exists(), "{flags:?}: an output file was written");
    }
}
