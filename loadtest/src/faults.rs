//! Faults during load: a timeline of `--fault AT:VERB:NODE[:FOR]` given on the command line,
//! applied to the local stack through its own controls (`scripts/stack stop|start|pause|resume
//! NODE`), and undone at the end whatever happens.
//!
//! - [`FaultSpec`]: one `--fault`, parsed (`10s:stop:shard1-replica`, `20s:pause:redis:5s`);
//! - [`Timeline`]: every spec checked against the nodes' states in time order (a node is up,
//!   stopped or paused; `start` undoes a `stop`, `resume` a `pause`), as events to apply and
//!   as [`Episode`]s, the spans the report has a row for;
//! - [`Stack`]: the script and the stack it acts on (dir and port base, passed explicitly so
//!   the faults land on the stack the service under test uses, never on another one);
//! - [`Injector`]: applies events and remembers what is still stopped or paused, so that
//!   [`Injector::restore`] leaves the stack as it found it after an error or a Ctrl-C.
//!
//! Times are offsets from the start of the measured window (after `--warmup`).

use std::{
    collections::BTreeMap,
    fmt,
    path::PathBuf,
    str::FromStr,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::engine::parse_duration;

/// The stack's processes (`scripts/stack --help`).
pub const NODES: [&str; 5] = [
    "redis",
    "shard0-primary",
    "shard0-replica",
    "shard1-primary",
    "shard1-replica",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    /// `pg_ctl stop -m fast` / Redis `SHUTDOWN`: connections are refused at once.
    Stop,
    Start,
    /// SIGSTOP: connections hang, and callers wait out their own timeouts.
    Pause,
    Resume,
}

impl Verb {
    pub fn name(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Start => "start",
            Self::Pause => "pause",
            Self::Resume => "resume",
        }
    }

    /// The verb that undoes this one; `None` for the undoing verbs.
    pub fn undo(self) -> Option<Self> {
        match self {
            Self::Stop => Some(Self::Start),
            Self::Pause => Some(Self::Resume),
            Self::Start | Self::Resume => None,
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One `--fault`: `AT:VERB:NODE`, or `AT:VERB:NODE:FOR` for a stop or pause undone `FOR` later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultSpec {
    pub at: Duration,
    pub verb: Verb,
    pub node: String,
    pub undo_after: Option<Duration>,
}

impl FromStr for FaultSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let parts: Vec<&str> = s.split(':').map(str::trim).collect();
        let (at, verb, node, undo_after) = match parts[..] {
            [at, verb, node] => (at, verb, node, None),
            [at, verb, node, undo] => (at, verb, node, Some(undo)),
            _ => bail!("`{s}` is not AT:VERB:NODE or AT:VERB:NODE:FOR (e.g. 20s:pause:redis:5s)"),
        };
        let at = parse_duration(at).map_err(|e| anyhow::anyhow!("`{s}`: {e}"))?;
        let verb = match verb {
            "stop" => Verb::Stop,
            "start" => Verb::Start,
            "pause" => Verb::Pause,
            "resume" => Verb::Resume,
            other => bail!("`{s}`: unknown verb `{other}`: stop, start, pause or resume"),
        };
        ensure!(
            NODES.contains(&node),
            "`{s}`: unknown node `{node}`: one of {}",
            NODES.join(", ")
        );
        let undo_after = undo_after
            .map(|d| parse_duration(d).map_err(|e| anyhow::anyhow!("`{s}`: {e}")))
            .transpose()?;
        if let Some(undo) = undo_after {
            ensure!(
                verb.undo().is_some(),
                "`{s}`: only stop and pause take a duration (they are undone after it)"
            );
            ensure!(!undo.is_zero(), "`{s}`: a fault lasts more than 0 s");
        }
        Ok(Self {
            at,
            verb,
            node: node.to_owned(),
            undo_after,
        })
    }
}

/// One step of the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: Duration,
    pub verb: Verb,
    pub node: String,
}

/// A node stopped or paused, from its fault to its undo (`None`: undone at the end, after
/// the window).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    pub node: String,
    pub verb: Verb,
    pub from: Duration,
    pub until: Option<Duration>,
}

impl Episode {
    /// `stop shard1-replica`.
    pub fn label(&self) -> String {
        format!("{} {}", self.verb, self.node)
    }
}

/// Every fault in time order, checked: each node goes up -> stopped -> up or up -> paused ->
/// up, so a `start` needs an earlier `stop` of the same node and two faults of one node never
/// overlap (their effects could not be told apart).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    pub events: Vec<Event>,
    pub episodes: Vec<Episode>,
}

impl Timeline {
    /// `window`: the measured window; every event must fall inside it.
    pub fn new(specs: &[FaultSpec], window: Duration) -> anyhow::Result<Self> {
        let mut events: Vec<Event> = Vec::new();
        for spec in specs {
            events.push(Event {
                at: spec.at,
                verb: spec.verb,
                node: spec.node.clone(),
            });
            if let (Some(after), Some(undo)) = (spec.undo_after, spec.verb.undo()) {
                events.push(Event {
                    at: spec.at + after,
                    verb: undo,
                    node: spec.node.clone(),
                });
            }
        }
        // Stable: events at the same instant keep the order they were given in.
        events.sort_by_key(|e| e.at);
        let mut open: BTreeMap<&str, usize> = BTreeMap::new();
        let mut episodes: Vec<Episode> = Vec::new();
        for event in &events {
            ensure!(
                event.at < window,
                "{} {} at {:?} is not inside the measured window ({window:?}): lengthen --duration",
                event.verb,
                event.node,
                event.at
            );
            match (event.verb.undo(), open.get(event.node.as_str())) {
                (Some(_), None) => {
                    open.insert(&event.node, episodes.len());
                    episodes.push(Episode {
                        node: event.node.clone(),
                        verb: event.verb,
                        from: event.at,
                        until: None,
                    });
                }
                (Some(_), Some(&i)) => bail!(
                    "{} {} at {:?}: it is already {} since {:?}",
                    event.verb,
                    event.node,
                    event.at,
                    match episodes[i].verb {
                        Verb::Pause => "paused",
                        _ => "stopped",
                    },
                    episodes[i].from
                ),
                (None, Some(&i)) if episodes[i].verb.undo() == Some(event.verb) => {
                    episodes[i].until = Some(event.at);
                    open.remove(event.node.as_str());
                }
                (None, _) => bail!(
                    "{} {} at {:?}: nothing {} it before",
                    event.verb,
                    event.node,
                    event.at,
                    match event.verb {
                        Verb::Resume => "paused",
                        _ => "stopped",
                    }
                ),
            }
        }
        Ok(Self { events, episodes })
    }
}

/// The stack the faults act on, through its script.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stack {
    pub script: PathBuf,
    /// `SCALABLE_API_STACK_DIR`; `None`: the script's default for the port base.
    pub dir: Option<String>,
    /// `SCALABLE_API_STACK_PORT_BASE`.
    pub port_base: u16,
}

impl Stack {
    async fn command(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let mut command = Command::new(&self.script);
        command
            .args(args)
            .env("SCALABLE_API_STACK_PORT_BASE", self.port_base.to_string())
            .stdin(std::process::Stdio::null());
        match &self.dir {
            Some(dir) => command.env("SCALABLE_API_STACK_DIR", dir),
            None => command.env_remove("SCALABLE_API_STACK_DIR"),
        };
        command
            .output()
            .await
            .with_context(|| format!("run {}", self.script.display()))
    }

    /// Every node runs (`scripts/stack status` exits 0): a fault on a node already down would
    /// measure nothing.
    pub async fn check(&self) -> anyhow::Result<()> {
        let output = self.command(&["status"]).await?;
        ensure!(
            output.status.success(),
            "not every node of the stack (port base {}) runs:\n{}",
            self.port_base,
            String::from_utf8_lossy(&output.stdout)
        );
        Ok(())
    }

    /// `scripts/stack VERB NODE`; the error carries the script's own message.
    pub async fn apply(&self, verb: Verb, node: &str) -> anyhow::Result<()> {
        let output = self.command(&[verb.name(), node]).await?;
        ensure!(
            output.status.success(),
            "`{} {verb} {node}` failed ({}): {}",
            self.script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(())
    }
}

/// Applies events and remembers what is down, for [`Injector::restore`].
#[derive(Debug)]
pub struct Injector {
    pub stack: Stack,
    /// Nodes stopped or paused by this run and not yet undone.
    down: Mutex<BTreeMap<String, Verb>>,
}

impl Injector {
    pub fn new(stack: Stack) -> Self {
        Self {
            stack,
            down: Mutex::default(),
        }
    }

    /// Applies one event. A fault is remembered *before* its command runs: a `stop` that fails
    /// half-way may still have stopped the node, and undoing an intact node is harmless
    /// (`start` and `resume` of a running node do nothing).
    pub async fn apply(&self, verb: Verb, node: &str) -> anyhow::Result<()> {
        if verb.undo().is_some() {
            self.lock().insert(node.to_owned(), verb);
        }
        let result = self.stack.apply(verb, node).await;
        if verb.undo().is_none() && result.is_ok() {
            self.lock().remove(node);
        }
        result
    }

    /// The nodes still down, in the order to bring them back: paused ones first (a thaw is
    /// instant), then Redis, primaries, replicas (a replica started before its primary only
    /// streams once the primary is back).
    pub fn pending(&self) -> Vec<(Verb, String)> {
        let mut undo: Vec<(Verb, String)> = self
            .lock()
            .iter()
            .filter_map(|(node, verb)| verb.undo().map(|undo| (undo, node.clone())))
            .collect();
        undo.sort_by_key(|(verb, node)| {
            let kind = if node == "redis" {
                0
            } else if node.ends_with("primary") {
                1
            } else {
                2
            };
            (*verb != Verb::Resume, kind)
        });
        undo
    }

    /// Undoes every fault still in place; returns what could not be undone (and says so on
    /// stderr, with the command to do it by hand).
    pub async fn restore(&self) -> Vec<String> {
        let mut failures = Vec::new();
        for (verb, node) in self.pending() {
            eprintln!("faults: {verb} {node} (undoing what this run did)");
            if let Err(err) = self.apply(verb, &node).await {
                eprintln!(
                    "faults: could not {verb} {node}: {err:#}\n  by hand: SCALABLE_API_STACK_PORT_BASE={} {}{} {verb} {node}",
                    self.stack.port_base,
                    self.stack
                        .dir
                        .as_ref()
                        .map(|d| format!("SCALABLE_API_STACK_DIR={d} "))
                        .unwrap_or_default(),
                    self.stack.script.display()
                );
                failures.push(format!("{verb} {node}: {err:#}"));
            }
        }
        failures
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Verb>> {
        self.down.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Injector {
    /// The last resort (a panic unwinding past the run): undo synchronously. The normal
    /// paths, errors and Ctrl-C included, call [`Injector::restore`] and leave nothing here.
    fn drop(&mut self) {
        for (verb, node) in self.pending() {
            eprintln!("faults: {verb} {node} (on drop)");
            let mut command = std::process::Command::new(&self.stack.script);
            command.args([verb.name(), node.as_str()]).env(
                "SCALABLE_API_STACK_PORT_BASE",
                self.stack.port_base.to_string(),
            );
            if let Some(dir) = &self.stack.dir {
                command.env("SCALABLE_API_STACK_DIR", dir);
            }
            let _ = command.status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> FaultSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e:#}"))
    }

    #[test]
    fn a_fault_is_at_verb_node_and_an_optional_duration() {
        assert_eq!(
            spec("10s:stop:shard1-replica"),
            FaultSpec {
                at: Duration::from_secs(10),
                verb: Verb::Stop,
                node: "shard1-replica".to_owned(),
                undo_after: None,
            }
        );
        assert_eq!(
            spec("1500ms:pause:redis:5s"),
            FaultSpec {
                at: Duration::from_millis(1500),
                verb: Verb::Pause,
                node: "redis".to_owned(),
                undo_after: Some(Duration::from_secs(5)),
            }
        );
        for bad in [
            "10s:stop",
            "10s:kill:redis",
            "10s:stop:shard2-primary",
            "soon:stop:redis",
            "10s:start:redis:5s",
            "10s:pause:redis:0s",
            "10s:stop:redis:5s:x",
        ] {
            assert!(bad.parse::<FaultSpec>().is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn the_timeline_expands_durations_orders_events_and_pairs_undos() {
        let timeline = Timeline::new(
            &[
                spec("30s:stop:shard0-primary"),
                spec("20s:pause:redis:5s"),
                spec("10s:stop:shard1-replica"),
                spec("18s:start:shard1-replica"),
            ],
            Duration::from_secs(45),
        )
        .expect("valid");
        let steps: Vec<String> = timeline
            .events
            .iter()
            .map(|e| format!("{}:{}:{}", e.at.as_secs(), e.verb, e.node))
            .collect();
        assert_eq!(
            steps,
            [
                "10:stop:shard1-replica",
                "18:start:shard1-replica",
                "20:pause:redis",
                "25:resume:redis",
                "30:stop:shard0-primary"
            ]
        );
        let spans: Vec<(String, u64, Option<u64>)> = timeline
            .episodes
            .iter()
            .map(|e| (e.label(), e.from.as_secs(), e.until.map(|u| u.as_secs())))
            .collect();
        assert_eq!(
            spans,
            [
                ("stop shard1-replica".to_owned(), 10, Some(18)),
                ("pause redis".to_owned(), 20, Some(25)),
                ("stop shard0-primary".to_owned(), 30, None),
            ]
        );
    }

    #[test]
    fn the_timeline_refuses_what_the_nodes_states_do_not_allow() {
        let window = Duration::from_secs(45);
        let refused = |specs: &[&str]| {
            let specs: Vec<FaultSpec> = specs.iter().map(|s| spec(s)).collect();
            Timeline::new(&specs, window).expect_err("refused")
        };
        let err = refused(&["10s:start:redis"]);
        assert!(err.to_string().contains("nothing stopped"), "{err}");
        let err = refused(&["10s:pause:redis:10s", "15s:stop:redis"]);
        assert!(err.to_string().contains("already paused"), "{err}");
        refused(&["10s:stop:redis", "12s:resume:redis"]);
        let err = refused(&["40s:stop:redis:10s"]);
        assert!(err.to_string().contains("--duration"), "{err}");
        // Two nodes at once, and the same node twice in turn, are fine.
        for ok in [
            &["10s:stop:redis:5s", "10s:pause:shard0-replica:5s"][..],
            &["10s:stop:redis:5s", "15s:stop:redis:5s"][..],
        ] {
            let specs: Vec<FaultSpec> = ok.iter().map(|s| spec(s)).collect();
            Timeline::new(&specs, window).unwrap_or_else(|e| panic!("{ok:?}: {e:#}"));
        }
    }

    #[test]
    fn what_is_still_down_comes_back_thawed_first_then_redis_primaries_replicas() {
        let injector = Injector::new(Stack {
            script: PathBuf::from("/nonexistent/stack"),
            dir: None,
            port_base: 55600,
        });
        {
            let mut down = injector.lock();
            down.insert("shard1-replica".to_owned(), Verb::Stop);
            down.insert("shard0-primary".to_owned(), Verb::Stop);
            down.insert("shard0-replica".to_owned(), Verb::Pause);
            down.insert("redis".to_owned(), Verb::Stop);
        }
        let order: Vec<String> = injector
            .pending()
            .iter()
            .map(|(verb, node)| format!("{verb} {node}"))
            .collect();
        assert_eq!(
            order,
            [
                "resume shard0-replica",
                "start redis",
                "start shard0-primary",
                "start shard1-replica"
            ]
        );
        // Nothing to run on drop once it is empty (the script does not exist).
        injector.lock().clear();
    }

    /// A stand-in for `scripts/stack` that logs its environment and arguments, and fails for
    /// shard0-primary.
    fn fake_stack(name: &str) -> (Stack, PathBuf) {
        use std::os::unix::fs::PermissionsExt as _;
        let dir =
            std::env::temp_dir().join(format!("loadtest-faults-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let script = dir.join("stack");
        std::fs::write(
            &script,
            "#!/bin/sh\n\
             echo \"$SCALABLE_API_STACK_DIR $SCALABLE_API_STACK_PORT_BASE $*\" >> \"$(dirname \"$0\")/calls\"\n\
             if [ \"$2\" = shard0-primary ]; then echo 'no such luck' >&2; exit 1; fi\n",
        )
        .expect("script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let stack = Stack {
            script,
            dir: Some("/tmp/some-stack".to_owned()),
            port_base: 55600,
        };
        (stack, dir.join("calls"))
    }

    #[tokio::test]
    async fn faults_reach_the_named_stack_and_whatever_is_left_down_is_undone() {
        let (stack, calls) = fake_stack("restore");
        stack.check().await.expect("status exits 0");
        let injector = Injector::new(stack);
        injector
            .apply(Verb::Stop, "shard1-replica")
            .await
            .expect("stop");
        injector.apply(Verb::Pause, "redis").await.expect("pause");
        injector.apply(Verb::Resume, "redis").await.expect("resume");
        injector
            .apply(Verb::Pause, "redis")
            .await
            .expect("pause again");
        let err = injector
            .apply(Verb::Stop, "shard0-primary")
            .await
            .expect_err("the script fails");
        assert!(format!("{err:#}").contains("no such luck"), "{err:#}");

        let failures = injector.restore().await;

        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            failures[0].starts_with("start shard0-primary"),
            "{failures:?}"
        );
        assert_eq!(
            injector.pending(),
            [(Verb::Start, "shard0-primary".to_owned())]
        );
        injector.lock().clear();
        let log = std::fs::read_to_string(&calls).expect("calls");
        assert_eq!(
            log.lines().collect::<Vec<_>>(),
            [
                "/tmp/some-stack 55600 status",
                "/tmp/some-stack 55600 stop shard1-replica",
                "/tmp/some-stack 55600 pause redis",
                "/tmp/some-stack 55600 resume redis",
                "/tmp/some-stack 55600 pause redis",
                "/tmp/some-stack 55600 stop shard0-primary",
                "/tmp/some-stack 55600 resume redis",
                "/tmp/some-stack 55600 start shard0-primary",
                "/tmp/some-stack 55600 start shard1-replica",
            ]
        );
        let _ = std::fs::remove_dir_all(calls.parent().expect("dir"));
    }
}
