//! The configuration and onboarding plan loaders on arbitrary text: an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = sputnik::Settings::from_toml_str(text);
    let path = std::path::Path::new("fuzz.toml");
    if let Err(errors) = sputnik::onboarding::plan::parse(path, text, &|link| link.ends_with(".md")) {
        assert!(!errors.is_empty(), "refused without a reason");
        for error in errors {
            assert!(error.to_string().starts_with("fuzz.toml"), "{error}");
        }
    }
});
