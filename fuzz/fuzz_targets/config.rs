//! The configuration loader (src/config/): arbitrary bytes as the TOML file and arbitrary
//! `SCALABLE_API_*` variables load or give an error, never a panic. Input: the file, then
//! NUL-separated `NAME=value` entries, each set as `SCALABLE_API_NAME` for that run.
//! Properties of a configuration that loads: it passes its own checks again after the round
//! trip the loader relies on (serialised, then extracted by figment as the defaults are),
//! the round trip changes nothing, and `redacted()` (what `scalable-api config` prints) works.
#![no_main]

use std::{ffi::OsStr, os::unix::ffi::OsStrExt, path::PathBuf, sync::LazyLock};

use figment::{Figment, providers::Serialized};
use libfuzzer_sys::fuzz_target;
use scalable_api::Config;

/// The file each run writes, one per fuzzing process (`-fork`/`-jobs` run several).
static FILE: LazyLock<PathBuf> = LazyLock::new(|| {
    // Variables from the shell (`scripts/stack env` sets some) would be part of every run.
    let inherited: Vec<_> = std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| name.as_bytes().starts_with(b"SCALABLE_API_"))
        .collect();
    for name in inherited {
        // SAFETY: libFuzzer runs the target on one thread, and nothing else in this process
        // reads or writes the environment concurrently.
        unsafe { std::env::remove_var(name) };
    }
    std::env::temp_dir().join(format!(
        "scalable-api-fuzz-config-{}.toml",
        std::process::id()
    ))
});

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let file = parts.next().unwrap_or_default();
    if std::fs::write(&*FILE, file).is_err() {
        return;
    }
    let mut names = Vec::new();
    for entry in parts {
        let Some(eq) = entry.iter().position(|&b| b == b'=') else {
            continue;
        };
        let mut name = b"SCALABLE_API_".to_vec();
        name.extend_from_slice(&entry[..eq]);
        let name = OsStr::from_bytes(&name).to_owned();
        // SAFETY: as above. Neither part holds NUL (the separator), the name holds no `=`.
        unsafe { std::env::set_var(&name, OsStr::from_bytes(&entry[eq + 1..])) };
        names.push(name);
    }
    let loaded = Config::load(Some(FILE.as_path()));
    for name in names {
        // SAFETY: as above.
        unsafe { std::env::remove_var(name) };
    }
    let Ok(config) = loaded else {
        return;
    };
    let _ = config.redacted();
    let again: Config = Figment::from(Serialized::defaults(&config))
        .extract()
        .unwrap_or_else(|err| panic!("a loaded config does not extract again: {err}"));
    if let Err(err) = again.validate() {
        panic!("a loaded config fails its checks after a round trip: {err:#}");
    }
    let (before, after) = (
        serde_json::to_value(&config).expect("a Config serialises"),
        serde_json::to_value(&again).expect("a Config serialises"),
    );
    assert_eq!(before, after, "the round trip changed the config");
});
