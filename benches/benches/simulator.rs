//! Area 5 — simulated events per second: the simulator (`livepatch-mock`) runs its default
//! scenario (4000 tasks, 8 simulated CPUs) to the end under the Linux 6.12 policy and under
//! the improved policy, oracle on. Criterion measures the wall time of a whole run; the events
//! a run handles are printed as `extra:` lines (every run of a seed handles the same events),
//! so events/s = events / time.

use criterion::{BenchmarkId, Criterion, Throughput};
use livepatch_mock::{run, scenario};

fn bench(c: &mut Criterion) {
    let def = scenario::find("default").expect("the default scenario exists");
    let sc = def.build_with(None, None, None).expect("the default scenario builds");
    let mut group = c.benchmark_group("simulator");
    group.sample_size(10);
    for name in ["linux-6.12", "improved"] {
        let policy = livepatch_mock::model(name).expect("known model");
        let first = run::run(&sc, policy);
        println!(
            "extra: simulator/{name} events={} converged={} violations={} wall_ns={} events_per_s={:.0}",
            first.events,
            first.converged,
            first.violations,
            first.wall_ns,
            first.events_per_sec()
        );
        group.throughput(Throughput::Elements(first.events));
        group.bench_function(BenchmarkId::new("default", name), |b| b.iter(|| run::run(&sc, policy).events));
    }
    group.finish();
}

fn main() {
    let mut c = livepatch_benches::criterion();
    bench(&mut c);
    c.final_summary();
}
