//! The `llm_answer` target (see `adiuva_fuzz::llm_answer`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adiuva_fuzz::llm_answer(data));
