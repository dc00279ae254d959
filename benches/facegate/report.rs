//! The table: every figure for both servers, the ratio facegate / reference, and the targets.

use crate::load::Rpc;
use crate::{mib, ms, Args, Point, Results, Server};

pub fn server_name(s: Server) -> &'static str {
    match s {
        Server::Facegate => "facegate",
        Server::Reference => "reference",
    }
}

pub struct Table {
    pub text: String,
    /// Figures that were not produced (missing, zero, not finite).
    pub missing: Vec<String>,
}

struct Row {
    cells: [String; 6],
}

struct Builder {
    rows: Vec<Row>,
    missing: Vec<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A target as the issue states it, against the reference of the same run.
#[derive(Clone, Copy)]
enum Target {
    None,
    /// facegate / reference at least this.
    RatioAtLeast(f64),
    /// facegate / reference at most this.
    RatioAtMost(f64),
    /// facegate at most this much above the reference (ms).
    AboveAtMost(f64),
}

impl Target {
    fn text(self) -> String {
        match self {
            Target::None => String::new(),
            Target::RatioAtLeast(x) => format!(">= {x:.2}x"),
            Target::RatioAtMost(x) => format!("<= {x:.2}x"),
            Target::AboveAtMost(d) => format!("<= ref + {d} ms"),
        }
    }

    fn met(self, f: f64, r: f64) -> Option<bool> {
        match self {
            Target::None => None,
            Target::RatioAtLeast(x) => Some(f / r >= x),
            Target::RatioAtMost(x) => Some(f / r <= x),
            Target::AboveAtMost(d) => Some(f - r <= d),
        }
    }
}

fn verdict(met: bool) -> String {
    if met { "met" } else { "NOT met" }.into()
}

impl Builder {
    /// Checks that `v` was produced: finite and above zero.
    fn produced(&mut self, name: &str, v: f64) -> bool {
        let ok = v.is_finite() && v > 0.0;
        if !ok {
            self.missing.push(format!("{name}: {v}"));
        }
        ok
    }

    /// A row with a figure of both servers, their ratio and the target.
    fn pair(&mut self, name: String, f: f64, r: f64, decimals: usize, target: Target) {
        let ratio = f / r;
        let ok = self.produced(&format!("{name} (facegate)"), f)
            & self.produced(&format!("{name} (reference)"), r)
            & self.produced(&format!("{name} (ratio)"), ratio);
        let status = match target.met(f, r) {
            Some(met) if ok => verdict(met),
            Some(_) => "no figure".into(),
            None => String::new(),
        };
        self.rows.push(Row {
            cells: [
                name,
                format!("{f:.decimals$}"),
                format!("{r:.decimals$}"),
                format!("{ratio:.2}x"),
                target.text(),
                status,
            ],
        });
    }

    fn line(&mut self, cells: [String; 6]) {
        self.rows.push(Row { cells });
    }
}

fn point_median(points: &[Point], f: impl Fn(&Point) -> f64) -> f64 {
    median(points.iter().map(f).collect())
}

pub fn table(args: &Args, res: &Results) -> Table {
    let mut b = Builder {
        rows: Vec::new(),
        missing: Vec::new(),
    };
    let get = |s: Server| res.startup.get(&s).map(|d| ms(*d)).unwrap_or(f64::NAN);
    b.pair(
        "start-up to SERVING (ms)".into(),
        get(Server::Facegate),
        get(Server::Reference),
        0,
        Target::None,
    );
    let rss = |s: Server| res.idle_rss.get(&s).map(|k| mib(*k)).unwrap_or(f64::NAN);
    b.pair(
        "RSS before the load (MiB)".into(),
        rss(Server::Facegate),
        rss(Server::Reference),
        1,
        Target::None,
    );

    for rpc in crate::ALL_RPCS.into_iter().filter(|r| args.measures(*r)) {
        for conc in crate::CONCURRENCY {
            let pts = |s: Server| res.rpcs.get(&(rpc, conc, s)).cloned().unwrap_or_default();
            let (f, r) = (pts(Server::Facegate), pts(Server::Reference));
            let label = format!("{} c={conc}", rpc.name());
            let throughput = match (rpc, conc) {
                (Rpc::GetResult, _) => Target::RatioAtLeast(0.70),
                (Rpc::StartSession, 64) => Target::RatioAtLeast(0.25),
                _ => Target::None,
            };
            b.pair(
                format!("{label} req/s"),
                point_median(&f, |p| p.per_second),
                point_median(&r, |p| p.per_second),
                0,
                throughput,
            );
            let p50 = match rpc {
                Rpc::GetResult => Target::AboveAtMost(0.3),
                _ => Target::None,
            };
            b.pair(
                format!("{label} p50 (ms)"),
                point_median(&f, |p| p.p50),
                point_median(&r, |p| p.p50),
                3,
                p50,
            );
            b.pair(
                format!("{label} p99 (ms)"),
                point_median(&f, |p| p.p99),
                point_median(&r, |p| p.p99),
                3,
                Target::None,
            );
            b.pair(
                format!("{label} p999 (ms)"),
                point_median(&f, |p| p.p999),
                point_median(&r, |p| p.p999),
                3,
                Target::None,
            );
        }
    }
    let all_read = res.started > 0 && res.read_back == res.started;
    if res.started == 0 {
        b.missing
            .push("no StartSession replies to read back".into());
    }
    b.line([
        "StartSession sessions read back by GetResult".into(),
        format!("{}/{}", res.read_back, res.started),
        "-".into(),
        "".into(),
        "all (written before the reply)".into(),
        verdict(all_read),
    ]);

    for (name, figures) in &res.streams {
        let fig = |s: Server| figures.get(&s).copied().unwrap_or_default();
        let (f, r) = (fig(Server::Facegate), fig(Server::Reference));
        if f.streams != args.streams || r.streams != args.streams {
            b.missing.push(format!("{name}: not every stream opened"));
        }
        b.pair(
            format!("idle stream KiB, {name}"),
            f.kib_per_stream(),
            r.kib_per_stream(),
            2,
            Target::RatioAtMost(2.0),
        );
        b.pair(
            "  RSS before the streams (MiB)".into(),
            mib(f.before),
            mib(r.before),
            1,
            Target::None,
        );
        b.pair(
            "  RSS with the streams open (MiB)".into(),
            mib(f.with),
            mib(r.with),
            1,
            Target::None,
        );
        let wait = args.close_wait.as_secs();
        b.pair(
            format!("  RSS {wait} s after close (MiB)"),
            mib(f.after),
            mib(r.after),
            1,
            Target::None,
        );
        let (fa, ra) = (f.after_ratio(), r.after_ratio());
        let ok = b.produced(&format!("{name} RSS after / before (facegate)"), fa)
            & b.produced(&format!("{name} RSS after / before (reference)"), ra);
        b.line([
            format!("  RSS {wait} s after close / before"),
            format!("{fa:.2}x"),
            format!("{ra:.2}x"),
            "".into(),
            "facegate <= 1.25x".into(),
            if ok {
                verdict(fa <= 1.25)
            } else {
                "no figure".into()
            },
        ]);
    }

    let header = [
        "figure",
        "facegate",
        "reference",
        "ratio",
        "target",
        "status",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for r in &b.rows {
        for (w, c) in widths.iter_mut().zip(&r.cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    let fmt = |cells: &[String; 6]| -> String {
        let mut s = String::from("|");
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            let pad = w - c.chars().count();
            // Numbers right-aligned, words left.
            if (1..=3).contains(&i) {
                s.push_str(&format!(" {}{c} |", " ".repeat(pad)));
            } else {
                s.push_str(&format!(" {c}{} |", " ".repeat(pad)));
            }
        }
        s.push('\n');
        s
    };
    let mut text = fmt(&header);
    text.push('|');
    for (i, w) in widths.iter().enumerate() {
        let dashes = "-".repeat(*w);
        if (1..=3).contains(&i) {
            text.push_str(&format!("-{dashes}:|"));
        } else {
            text.push_str(&format!("-{dashes}-|"));
        }
    }
    text.push('\n');
    for r in &b.rows {
        text.push_str(&fmt(&r.cells));
    }
    text.push_str(&format!(
        "\nmedians over {} round(s) of {} calls (each after a warm-up); latency from the call to its reply \
         (StreamStatus open: to the first message); ratio = facegate / reference.\n",
        args.rounds, args.calls
    ));
    Table {
        text,
        missing: b.missing,
    }
}
