//! The proxy-wasm ABI calls the plugins make, returning the host's status instead of
//! panicking. The SDK's wrappers panic on any status they do not expect (a header read in a
//! phase where the map is gone, a header value that is not UTF-8, a refused body edit), and a
//! panic takes the whole VM down. The calls left to the SDK (callouts, shared data, metrics,
//! timers) are ones whose every status Envoy can return the SDK handles.

use proxy_wasm::types::{BufferType, MapType};
use std::ptr::null_mut;

/// `proxy_status_t` values.
pub const OK: u32 = 0;
pub const NOT_FOUND: u32 = 1;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_value(
        map: MapType,
        key: *const u8,
        key_len: usize,
        value: *mut *mut u8,
        value_len: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map: MapType,
        key: *const u8,
        key_len: usize,
        value: *const u8,
        value_len: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: MapType, key: *const u8, key_len: usize) -> u32;
    fn proxy_get_header_map_pairs(map: MapType, data: *mut *mut u8, len: *mut usize) -> u32;
    fn proxy_get_buffer_bytes(
        buffer: BufferType,
        start: usize,
        max: usize,
        data: *mut *mut u8,
        len: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer: BufferType,
        start: usize,
        size: usize,
        data: *const u8,
        len: usize,
    ) -> u32;
    fn proxy_get_property(
        path: *const u8,
        path_len: usize,
        data: *mut *mut u8,
        len: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path: *const u8,
        path_len: usize,
        value: *const u8,
        value_len: usize,
    ) -> u32;
    fn proxy_send_local_response(
        status: u32,
        details: *const u8,
        details_len: usize,
        body: *const u8,
        body_len: usize,
        headers: *const u8,
        headers_len: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_continue_stream(stream: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
}

/// Takes ownership of memory the host filled through the SDK's allocator (a `Vec` it leaked).
///
/// # Safety
/// `data` must come from the host call that just returned it, with `len` bytes.
unsafe fn owned(data: *mut u8, len: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        Vec::from_raw_parts(data, len, len)
    }
}

/// Calls `f` with the out-pointers of a host call returning bytes.
fn returned(f: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Result<Option<Vec<u8>>, u32> {
    let mut data: *mut u8 = null_mut();
    let mut len: usize = 0;
    match f(&mut data, &mut len) {
        // SAFETY: on OK the host handed us `len` bytes at `data`.
        OK => Ok(Some(unsafe { owned(data, len) })),
        NOT_FOUND => Ok(None),
        status => Err(status),
    }
}

pub fn header(map: MapType, name: &str) -> Result<Option<Vec<u8>>, u32> {
    // SAFETY: pointers are valid for the duration of the call.
    returned(|data, len| unsafe {
        proxy_get_header_map_value(map, name.as_ptr(), name.len(), data, len)
    })
}

pub fn set_header(map: MapType, name: &str, value: Option<&[u8]>) -> u32 {
    // SAFETY: pointers are valid for the duration of the call.
    unsafe {
        match value {
            Some(v) => {
                proxy_replace_header_map_value(map, name.as_ptr(), name.len(), v.as_ptr(), v.len())
            }
            None => proxy_remove_header_map_value(map, name.as_ptr(), name.len()),
        }
    }
}

pub fn headers(map: MapType) -> Result<Vec<(String, String)>, u32> {
    // SAFETY: pointers are valid for the duration of the call.
    let bytes = returned(|data, len| unsafe { proxy_get_header_map_pairs(map, data, len) })?
        .unwrap_or_default();
    Ok(deserialize_map(&bytes))
}

pub fn buffer(buffer: BufferType, start: usize, max: usize) -> Result<Option<Vec<u8>>, u32> {
    // SAFETY: pointers are valid for the duration of the call.
    returned(|data, len| unsafe { proxy_get_buffer_bytes(buffer, start, max, data, len) })
}

pub fn set_buffer(buffer: BufferType, start: usize, size: usize, value: &[u8]) -> u32 {
    // SAFETY: pointers are valid for the duration of the call.
    unsafe { proxy_set_buffer_bytes(buffer, start, size, value.as_ptr(), value.len()) }
}

pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, u32> {
    let serialized = path.join("\0");
    // SAFETY: pointers are valid for the duration of the call.
    returned(|data, len| unsafe {
        proxy_get_property(serialized.as_ptr(), serialized.len(), data, len)
    })
}

pub fn set_property(path: &[&str], value: &[u8]) -> u32 {
    let serialized = path.join("\0");
    // SAFETY: pointers are valid for the duration of the call.
    unsafe {
        proxy_set_property(
            serialized.as_ptr(),
            serialized.len(),
            value.as_ptr(),
            value.len(),
        )
    }
}

pub fn send_local_response(status: u32, headers: &[(&str, &str)], body: &[u8]) -> u32 {
    let headers = serialize_map(headers);
    // SAFETY: pointers are valid for the duration of the call.
    unsafe {
        proxy_send_local_response(
            status,
            null_mut(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    }
}

/// Resumes a paused request (`0`) or response (`1`).
pub fn continue_stream(stream: u32) -> u32 {
    // SAFETY: no pointers.
    unsafe { proxy_continue_stream(stream) }
}

/// Makes `context_id` the context of the host calls that follow.
pub fn set_effective_context(context_id: u32) -> u32 {
    // SAFETY: no pointers.
    unsafe { proxy_set_effective_context(context_id) }
}

/// The ABI's map encoding: count, (key length, value length) pairs, then NUL-terminated keys
/// and values.
pub fn serialize_map(map: &[(&str, &str)]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(
        4 + map
            .iter()
            .map(|(k, v)| k.len() + v.len() + 10)
            .sum::<usize>(),
    );
    bytes.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (name, value) in map {
        bytes.extend_from_slice(&(name.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in map {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
    }
    bytes
}

/// Reads the map encoding; malformed input gives the pairs read so far, values not UTF-8 are
/// decoded lossily (a header can carry any byte).
pub fn deserialize_map(bytes: &[u8]) -> Vec<(String, String)> {
    let read_u32 = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let Some(count) = read_u32(0) else {
        return Vec::new();
    };
    let mut pairs = Vec::with_capacity(count.min(256));
    let mut p = 4 + count.saturating_mul(8);
    for n in 0..count {
        let (Some(key_len), Some(value_len)) = (read_u32(4 + n * 8), read_u32(8 + n * 8)) else {
            break;
        };
        let (Some(key), Some(value)) = (
            bytes.get(p..p + key_len),
            bytes.get(p + key_len + 1..p + key_len + 1 + value_len),
        ) else {
            break;
        };
        pairs.push((
            String::from_utf8_lossy(key).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
        p += key_len + 1 + value_len + 1;
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn map_encoding_round_trips_and_survives_bad_input() {
        let map = [(":status", "200"), ("content-type", "text/event-stream")];
        let decoded = deserialize_map(&serialize_map(&map));
        assert_eq!(
            decoded,
            vec![
                (":status".to_string(), "200".to_string()),
                ("content-type".to_string(), "text/event-stream".to_string())
            ]
        );
        let mut bytes = serialize_map(&[("x", "ab")]);
        let last = bytes.len() - 2;
        bytes[last] = 0xff; // a header value that is not UTF-8
        assert_eq!(
            deserialize_map(&bytes),
            vec![("x".to_string(), "a\u{fffd}".to_string())]
        );
        assert!(deserialize_map(&[1, 0, 0, 0, 9]).is_empty());
        assert!(deserialize_map(&[]).is_empty());
    }
}
