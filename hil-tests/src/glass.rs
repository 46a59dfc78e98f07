//! Glass-to-screen latency: the test camera stamps each frame with the wall-clock time it is
//! encoded ([`stamp_i420`]), and a page showing the video reads the stamp back off the screen
//! ([`read_stamps`]), so latency is measured end to end, through every buffer on the way.
//!
//! The stamp is a bar code in the frame's bottom [`ROWS`] rows: [`BLOCKS`] blocks of
//! `width / 64` pixels, black (0) or white (1): the marker `1 0`, the time in Unix
//! milliseconds ([`TIME_BITS`] bits, most significant first) and a check byte (the sum of the
//! time's bytes). Its colour is neutral grey scale, so red, green and blue all read as luma.
//! It survives H.264 at the test camera's bit rates because each block is many macroblocks
//! wide or tall and flat.

use crate::browser::Browser;

/// Rows the bar code takes at the bottom of the frame (one macroblock).
pub const ROWS: usize = 16;
/// Bits of the time stamp (Unix milliseconds until the year 2109).
pub const TIME_BITS: usize = 42;
/// Blocks: marker, time, check byte.
pub const BLOCKS: usize = 2 + TIME_BITS + 8;

/// The check byte of a time stamp.
pub fn check_byte(millis: u64) -> u8 {
    millis
        .to_be_bytes()
        .iter()
        .fold(0_u8, |sum, b| sum.wrapping_add(*b))
}

/// The bits the bar code shows, left to right.
pub fn bits(millis: u64) -> [bool; BLOCKS] {
    let mut bits = [false; BLOCKS];
    bits[0] = true;
    for i in 0..TIME_BITS {
        bits[2 + i] = (millis >> (TIME_BITS - 1 - i)) & 1 == 1;
    }
    let check = check_byte(millis);
    for i in 0..8 {
        bits[2 + TIME_BITS + i] = (check >> (7 - i)) & 1 == 1;
    }
    bits
}

/// Draws the stamp of `millis` into an I420 frame of `width` x `height` (width a multiple of
/// 8, height even: planes without padding). Does nothing to a buffer of another size.
pub fn stamp_i420(frame: &mut [u8], width: usize, height: usize, millis: u64) {
    let luma = width * height;
    if frame.len() != luma + luma / 2 || height < ROWS {
        return;
    }
    let block = width / 64;
    let bits = bits(millis);
    for row in height - ROWS..height {
        let line = &mut frame[row * width..(row + 1) * width];
        for (x, pixel) in line.iter_mut().enumerate() {
            let index = x / block;
            *pixel = if index < BLOCKS && bits[index] {
                235
            } else {
                16
            };
        }
    }
    // Neutral chroma under the bar code: grey scale.
    let (chroma_width, chroma_rows) = (width / 2, ROWS / 2);
    for plane in 0..2 {
        let start = luma + plane * luma / 4;
        for row in (height / 2 - chroma_rows)..height / 2 {
            let at = start + row * chroma_width;
            frame[at..at + chroma_width].fill(128);
        }
    }
}

/// JavaScript that measures, for `seconds`, how old each frame the page's first `<video>`
/// presents is: it reads the stamp off every presented frame and compares it with the
/// frame's expected display time. Evaluates to `{ages: [ms...], unreadable: n, frames: n}`.
const READ_STAMPS_JS: &str = r#"
(seconds) => new Promise((resolve, reject) => {
  const video = document.querySelector('video');
  if (!video) { reject(new Error('no video element')); return; }
  const canvas = document.createElement('canvas');
  const context = canvas.getContext('2d', { willReadFrequently: true });
  const ages = [];
  let unreadable = 0, frames = 0;
  const end = performance.now() + seconds * 1000;
  const read = (now, meta) => {
    frames += 1;
    const width = video.videoWidth, height = video.videoHeight;
    canvas.width = width; canvas.height = height;
    context.drawImage(video, 0, 0, width, height);
    const row = context.getImageData(0, height - 8, width, 1).data;
    const block = Math.floor(width / 64);
    const bit = (i) => {
      const x = i * block + Math.floor(block / 2);
      return (row[4 * x] + row[4 * x + 1] + row[4 * x + 2]) / 3 > 128 ? 1 : 0;
    };
    let millis = 0;
    for (let i = 0; i < TIME_BITS; i += 1) millis = millis * 2 + bit(2 + i);
    let check = 0;
    for (let i = 0; i < 8; i += 1) check = check * 2 + bit(2 + TIME_BITS + i);
    let sum = 0, rest = millis;
    for (let i = 0; i < 8; i += 1) { sum = (sum + rest % 256) % 256; rest = Math.floor(rest / 256); }
    if (bit(0) === 1 && bit(1) === 0 && sum === check) {
      ages.push(performance.timeOrigin + meta.expectedDisplayTime - millis);
    } else {
      unreadable += 1;
    }
    if (performance.now() < end) video.requestVideoFrameCallback(read);
    else resolve({ ages, unreadable, frames });
  };
  video.requestVideoFrameCallback(read);
})
"#;

/// What [`read_stamps`] saw.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Stamps {
    /// How old each readable frame was when shown, in milliseconds.
    pub ages: Vec<f64>,
    /// Frames whose stamp could not be read.
    pub unreadable: u64,
    /// Frames presented in all.
    pub frames: u64,
}

/// Reads the stamps off the frames the page's first `<video>` presents for `seconds`.
pub async fn read_stamps(browser: &mut Browser, seconds: f64) -> anyhow::Result<Stamps> {
    let expression = format!(
        "({})({seconds})",
        READ_STAMPS_JS.replace("TIME_BITS", &TIME_BITS.to_string())
    );
    Ok(serde_json::from_value(
        browser.evaluate(&expression).await?,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_code_carries_the_time_and_its_check_byte() {
        let millis = 1_795_000_000_123_u64;
        let bits = bits(millis);
        assert_eq!((bits[0], bits[1]), (true, false));
        let read = bits[2..2 + TIME_BITS]
            .iter()
            .fold(0_u64, |v, &b| v * 2 + u64::from(b));
        assert_eq!(read, millis);
        let check = bits[2 + TIME_BITS..]
            .iter()
            .fold(0_u8, |v, &b| v.wrapping_mul(2) + u8::from(b));
        assert_eq!(check, check_byte(millis));
    }

    #[test]
    fn the_stamp_is_drawn_in_the_bottom_rows_in_grey_scale() {
        let (width, height) = (640, 360);
        let mut frame = vec![90_u8; width * height * 3 / 2];
        stamp_i420(&mut frame, width, height, 1);
        let block = width / 64;
        let y = |x: usize, row: usize| frame[row * width + x];
        // Marker 1 0, then 41 zero bits and a one: the time 1; its check byte is 1.
        assert_eq!(y(block / 2, height - 1), 235);
        assert_eq!(y(block + block / 2, height - 1), 16);
        assert_eq!(y((2 + TIME_BITS - 1) * block + 1, height - ROWS), 235);
        assert_eq!(y((BLOCKS - 1) * block + 1, height - ROWS), 235);
        assert_eq!(y(0, height - ROWS - 1), 90, "above the bar code");
        let u_last_row = width * height + (height / 2 - 1) * width / 2;
        assert_eq!(frame[u_last_row], 128);
        // A frame of another size is left alone.
        let mut other = vec![7_u8; 100];
        stamp_i420(&mut other, width, height, 1);
        assert!(other.iter().all(|&b| b == 7));
    }
}
