//! Many real processes generating the same stage at once: all succeed, one stage, no debris.

use crate::support::{TestEnv, MINIMAL};

#[test]
fn racing_writers_all_succeed_with_one_stage() {
    let env = TestEnv::new();
    env.write("bottle.toml", MINIMAL);
    let children: Vec<_> = (0..8)
        .map(|_| {
            env.command(&["gen"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let ids: Vec<String> = children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
    let top: Vec<String> = std::fs::read_dir(env.store())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        top,
        vec![ids[0].trim().to_owned()],
        "exactly one stage and no temporary directories"
    );
    assert_eq!(env.run(&["verify"]).code, 0);
}
