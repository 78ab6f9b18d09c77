//! Adversarial YAML shared by `tests/adversarial.rs` and
//! `examples/adversarial.rs` (each includes this file with `#[path]`).

/// The classic "billion laughs": nine levels of nine aliases each.
pub const BILLION_LAUGHS: &str = r#"
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"#;

/// A wide bomb: few aliases (under serde_yaml_ng's own guard of 100 alias
/// jumps per event), each expanding a large anchor.
pub fn wide_bomb(anchor: usize, aliases: usize) -> Vec<u8> {
    format!(
        "a: &a [{}]\nb: [{}]\n",
        vec!["x"; anchor].join(","),
        vec!["*a"; aliases].join(",")
    )
    .into_bytes()
}
