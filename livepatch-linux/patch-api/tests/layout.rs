//! The `#[repr(C)]` types against `include/livepatch_rs.h`: a C program including the header
//! (with empty stand-ins for the kernel headers it includes) prints every struct's size and
//! every field's offset, compiled by the host's `cc`; each must equal the Rust type's.

use std::path::PathBuf;
use std::process::Command;

const PROGRAM: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <livepatch_rs.h>
#define S(t) printf(#t " %zu\n", sizeof(struct t))
#define O(t, f) printf(#t "." #f " %zu\n", offsetof(struct t, f))
int main(void)
{
	S(klp_func); O(klp_func, old_name); O(klp_func, new_func); O(klp_func, old_sympos);
	S(klp_callbacks); O(klp_callbacks, pre_patch); O(klp_callbacks, post_patch);
	O(klp_callbacks, pre_unpatch); O(klp_callbacks, post_unpatch);
	O(klp_callbacks, post_unpatch_enabled);
	S(klp_object); O(klp_object, name); O(klp_object, funcs); O(klp_object, callbacks);
	O(klp_object, mod);
	S(klp_state); O(klp_state, id); O(klp_state, version); O(klp_state, data);
	S(klp_patch); O(klp_patch, mod); O(klp_patch, objs); O(klp_patch, states);
	O(klp_patch, replace);
	return 0;
}
"#;

/// The header's layout as the C compiler sees it: (name, value) lines.
fn c_layout() -> Vec<(String, usize)> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lprs-layout");
    let linux = dir.join("linux");
    std::fs::create_dir_all(&linux).unwrap();
    // The kernel headers the header includes: only the types it uses.
    std::fs::write(linux.join("types.h"), "#include <stdbool.h>\n#include <stddef.h>\ntypedef unsigned int gfp_t;\n")
        .unwrap();
    for h in ["module.h", "ftrace.h", "completion.h", "list.h", "sched.h"] {
        std::fs::write(linux.join(h), "struct module;\n").unwrap();
    }
    std::fs::write(dir.join("layout.c"), PROGRAM).unwrap();
    let include = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../include");
    let exe = dir.join("layout");
    let out = Command::new("cc")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-I")
        .arg(&dir)
        .arg("-I")
        .arg(&include)
        .arg("-o")
        .arg(&exe)
        .arg(dir.join("layout.c"))
        .output()
        .expect("running cc");
    assert!(out.status.success(), "cc failed: {}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(&exe).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn repr_c_types_have_the_headers_layout() {
    let rust = livepatch_rs_patch::layout();
    let c = c_layout();
    assert_eq!(c.len(), rust.len(), "C printed {c:?}");
    for ((ck, cv), (rk, rv)) in c.iter().zip(&rust) {
        assert_eq!(ck, rk);
        println!("{ck}: {cv}");
        assert_eq!(cv, rv, "{ck}: header {cv}, Rust {rv}");
    }
}
