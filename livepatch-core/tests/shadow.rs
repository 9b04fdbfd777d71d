//! Shadow variables against a `HashMap` reference: random alloc / get / get-or-alloc / free /
//! free-all / reclaim sequences, including constructor failures and a full table.

use livepatch_core::patch::CallbackError;
use livepatch_core::shadow::{ShadowData, ShadowError, ShadowId, ShadowSlot, ShadowTable};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Default)]
struct Value(AtomicUsize);

impl ShadowData for Value {
    fn zero(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

#[derive(Clone, Debug)]
enum Op {
    Alloc { obj: usize, id: u32, value: usize, fail: bool },
    GetOrAlloc { obj: usize, id: u32, value: usize },
    Get { obj: usize, id: u32 },
    Free { obj: usize, id: u32 },
    FreeAll { id: u32 },
    Reclaim,
}

fn op() -> impl Strategy<Value = Op> {
    let obj = 0usize..6;
    let id = 0u32..3;
    prop_oneof![
        (obj.clone(), id.clone(), 1usize..100, proptest::bool::weighted(0.2))
            .prop_map(|(obj, id, value, fail)| Op::Alloc { obj, id, value, fail }),
        (obj.clone(), id.clone(), 1usize..100).prop_map(|(obj, id, value)| Op::GetOrAlloc { obj, id, value }),
        (obj.clone(), id.clone()).prop_map(|(obj, id)| Op::Get { obj, id }),
        (obj, id.clone()).prop_map(|(obj, id)| Op::Free { obj, id }),
        id.prop_map(|id| Op::FreeAll { id }),
        Just(Op::Reclaim),
    ]
}

proptest! {
    #[test]
    fn shadow_table_matches_a_map(ops in proptest::collection::vec(op(), 1..60)) {
        const SLOTS: usize = 8;
        let slots: Vec<ShadowSlot<Value>> = (0..SLOTS).map(|_| ShadowSlot::default()).collect();
        let table = ShadowTable::new(&slots);
        let mut live: HashMap<(usize, u32), usize> = HashMap::new();
        let mut retired = 0usize;
        for op in ops {
            match op {
                Op::Alloc { obj, id, value, fail } => {
                    let got = table.alloc(obj, ShadowId(id), |_, d| {
                        assert_eq!(d.0.load(Ordering::Relaxed), 0, "zeroed before the constructor");
                        d.0.store(value, Ordering::Relaxed);
                        if fail { Err(CallbackError(-1)) } else { Ok(()) }
                    });
                    let expect = if live.contains_key(&(obj, id)) {
                        Err(ShadowError::Exists)
                    } else if live.len() + retired == SLOTS {
                        Err(ShadowError::Full)
                    } else if fail {
                        Err(ShadowError::Constructor(CallbackError(-1)))
                    } else {
                        live.insert((obj, id), value);
                        Ok(value)
                    };
                    prop_assert_eq!(got.map(|d| d.0.load(Ordering::Relaxed)), expect);
                }
                Op::GetOrAlloc { obj, id, value } => {
                    let got = table.get_or_alloc(obj, ShadowId(id), |_, d| {
                        d.0.store(value, Ordering::Relaxed);
                        Ok(())
                    });
                    let expect = match live.get(&(obj, id)) {
                        Some(v) => Ok(*v),
                        None if live.len() + retired == SLOTS => Err(ShadowError::Full),
                        None => {
                            live.insert((obj, id), value);
                            Ok(value)
                        }
                    };
                    prop_assert_eq!(got.map(|d| d.0.load(Ordering::Relaxed)), expect);
                }
                Op::Get { obj, id } => {
                    let got = table.get(obj, ShadowId(id)).map(|d| d.0.load(Ordering::Relaxed));
                    prop_assert_eq!(got, live.get(&(obj, id)).copied());
                }
                Op::Free { obj, id } => {
                    let mut seen = None;
                    let got = table.free(obj, ShadowId(id), |o, d| seen = Some((o, d.0.load(Ordering::Relaxed))));
                    match live.remove(&(obj, id)) {
                        Some(v) => {
                            prop_assert_eq!(got, Ok(()));
                            prop_assert_eq!(seen, Some((obj, v)));
                            retired += 1;
                        }
                        None => prop_assert_eq!(got, Err(ShadowError::NotFound)),
                    }
                }
                Op::FreeAll { id } => {
                    let mut seen = Vec::new();
                    let n = table.free_all(ShadowId(id), |o, _| seen.push(o));
                    let mut expect: Vec<usize> = live.keys().filter(|k| k.1 == id).map(|k| k.0).collect();
                    live.retain(|k, _| k.1 != id);
                    expect.sort();
                    seen.sort();
                    prop_assert_eq!(n, expect.len());
                    prop_assert_eq!(seen, expect);
                    retired += n;
                }
                Op::Reclaim => {
                    let mut graces = 0;
                    prop_assert_eq!(table.reclaim(|| graces += 1), retired);
                    prop_assert_eq!(graces, usize::from(retired > 0));
                    retired = 0;
                }
            }
            prop_assert_eq!(table.len(), live.len());
        }
    }
}
