fn main() {
    println!("cargo:rustc-link-lib=espeak-ng");
    println!("cargo:rerun-if-changed=build.rs");
}
