//! `threads::begin` takes the frame record where every later stack walk of the thread ends, and
//! the walks read the stack up to it. It is a safe function: a frame that is not on the calling
//! thread's stack must be refused, or a later walk (a safe point, a hook, a kick) would read
//! memory that is not the thread's stack.

use livepatch_user::threads;
use livepatch_user::Error;

#[test]
fn a_frame_not_on_the_calling_threads_stack_is_refused() {
    let parents_local = 0usize;
    let parents_frame = &parents_local as *const usize as usize;
    let results = std::thread::spawn(move || {
        let local = 0usize;
        let here = &local as *const usize as usize;
        let heap = Box::new(0usize);
        let bad = [
            ("the parent thread's stack", parents_frame),
            ("the heap", &*heap as *const usize as usize),
            ("below the caller's frame (a dead frame)", here - 64 * 1024),
            ("far above the stack", usize::MAX & !7),
            ("misaligned", here + 1),
        ];
        let mut results = Vec::new();
        for (what, frame) in bad {
            let r = threads::begin(None, frame, || false);
            if r.is_ok() {
                threads::end();
            }
            results.push((what, r.map_err(|e| e.to_string())));
        }
        // The caller's own frame is accepted.
        let good = threads::begin(None, here, || false).map_err(|e| e.to_string());
        threads::end();
        results.push(("the caller's frame", good));
        results
    })
    .join()
    .expect("the thread ran");
    for (what, r) in &results[..results.len() - 1] {
        assert!(r.is_err(), "a frame on {what} was accepted");
    }
    assert_eq!(results.last().map(|(_, r)| r.clone()), Some(Ok(())), "a frame on the caller's own stack was refused");
    let refused = threads::begin(None, parents_frame + 1, || false);
    assert!(matches!(refused, Err(Error::Frame(_))), "{refused:?}");
}
