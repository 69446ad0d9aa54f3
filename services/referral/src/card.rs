//! Share cards (the seed's 智能名片): a member's share URL drawn as a QR code, once as a
//! standalone SVG (scalable, for print and the web) and once as a greyscale PNG (for chat apps
//! that only take bitmaps).
//!
//! Pure: no I/O, no clock, no randomness; the same URL and size always give the same bytes.
//!
//! Choices a scanner cares about:
//! - Error correction level M (15 % of codewords recoverable). Share URLs are short (a base URL
//!   and a token), so M keeps the code at a low version with large modules, which matters more
//!   for a phone reading a screen or a screenshot re-compressed by a chat app than Q's extra
//!   redundancy would; Q or H pay off when a logo is drawn over the code, and we draw none.
//! - A quiet zone of 4 modules, the standard's minimum, on every side and in both formats.
//! - The PNG scales every module by the same whole number of pixels and centres the code; the
//!   pixels left over by the integer division widen the light margin. Uneven modules (some 1 px,
//!   some 2 px) are what makes small bitmaps hard to read. A module gets at least
//!   `MIN_MODULE_PX` pixels: at 1 px a standard decoder (rqrr) no longer finds the timing
//!   pattern, so a long URL on a small card is refused ([`CardError::Encode`], saying which size
//!   would fit) rather than drawn unreadable.

use std::fmt::Write as _;

use qrcode::{Color, EcLevel, QrCode};

/// The card's edge in pixels when the caller asks for none (`size_px == 0`).
pub const DEFAULT_SIZE_PX: u32 = 512;
/// The smallest card: 2 px per module for codes up to version 9 (URLs of up to 180 bytes).
pub const MIN_SIZE_PX: u32 = 128;
/// The largest card: a poster-sized code; the PNG is then 4 MiB of pixels before compression.
pub const MAX_SIZE_PX: u32 = 2048;
/// The longest URL accepted. Share URLs are far shorter (a base URL and a token). At this
/// length the code is version 18 (97 modules with the quiet zone), which needs a card of at
/// least 194 px; URLs up to 180 bytes (version 9) fit every size down to `MIN_SIZE_PX`.
pub const MAX_URL_BYTES: usize = 512;
/// The fewest pixels a module may have in the PNG.
const MIN_MODULE_PX: usize = 2;

/// Modules of light margin around the code on every side (ISO/IEC 18004's minimum).
const QUIET_ZONE_MODULES: usize = 4;
const DARK: u8 = 0;
const LIGHT: u8 = 255;

/// A rendered share card. Both images show the same code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    /// A standalone SVG document (XML declaration, `xmlns`, a `viewBox` in module units and
    /// `width`/`height` of `size_px`), scalable without loss.
    pub svg: String,
    /// A PNG file: 8-bit greyscale, exactly `size_px` × `size_px`.
    pub png: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error(
        "size_px {0} is out of range: size_px must be {MIN_SIZE_PX}..={MAX_SIZE_PX} (0 for {DEFAULT_SIZE_PX})"
    )]
    Size(u32),
    #[error("invalid share url: {0}")]
    Url(String),
    #[error("cannot encode the share card: {0}")]
    Encode(String),
}

/// Renders `url` as a QR code card of `size_px` × `size_px` pixels (0 means
/// [`DEFAULT_SIZE_PX`]).
///
/// Errors: [`CardError::Size`] for a size outside `MIN_SIZE_PX..=MAX_SIZE_PX`,
/// [`CardError::Url`] for an empty URL, one longer than [`MAX_URL_BYTES`], or one with a
/// control character or a non-ASCII character (QR byte mode has no agreed text encoding without
/// an ECI header, so scanners guess; a URL's non-ASCII parts belong percent-encoded or in
/// punycode anyway), [`CardError::Encode`] when the URL's code does not fit `size_px` at
/// `MIN_MODULE_PX` per module (a long URL on a small card; the message names the smallest size
/// that fits, so it is the caller's to fix, like the other two).
pub fn render(url: &str, size_px: u32) -> Result<Card, CardError> {
    let size_px = checked_size(size_px)?;
    check_url(url)?;
    let code = QrCode::with_error_correction_level(url.as_bytes(), EcLevel::M)
        .map_err(|e| CardError::Encode(format!("QR encoding failed: {e}")))?;
    let modules = Modules::of(&code);
    let layout = PngLayout::fit(&modules, size_px, url.len())?;
    let svg = render_svg(&modules, size_px).map_err(|e| CardError::Encode(e.to_string()))?;
    let png = render_png(&modules, &layout)?;
    Ok(Card { svg, png })
}

fn checked_size(size_px: u32) -> Result<u32, CardError> {
    match size_px {
        0 => Ok(DEFAULT_SIZE_PX),
        MIN_SIZE_PX..=MAX_SIZE_PX => Ok(size_px),
        _ => Err(CardError::Size(size_px)),
    }
}

fn check_url(url: &str) -> Result<(), CardError> {
    if url.is_empty() {
        return Err(CardError::Url("url must not be empty".to_owned()));
    }
    if url.len() > MAX_URL_BYTES {
        return Err(CardError::Url(format!(
            "url is {} bytes; at most {MAX_URL_BYTES} are allowed",
            url.len()
        )));
    }
    if let Some((at, c)) = url.char_indices().find(|(_, c)| c.is_control()) {
        return Err(CardError::Url(format!(
            "url contains control character U+{:04X} at byte {at}",
            u32::from(c)
        )));
    }
    if let Some((at, c)) = url.char_indices().find(|(_, c)| !c.is_ascii()) {
        return Err(CardError::Url(format!(
            "url contains non-ASCII character {c:?} at byte {at}; percent-encode it (or use punycode for the host)"
        )));
    }
    Ok(())
}

/// The code's module grid with the quiet zone included, so both renderers index one square.
struct Modules<'a> {
    code: &'a QrCode,
    /// Modules per side of the code itself.
    code_width: usize,
    /// Modules per side including the quiet zone on both sides.
    total: usize,
}

impl<'a> Modules<'a> {
    fn of(code: &'a QrCode) -> Self {
        let code_width = code.width();
        Self {
            code,
            code_width,
            total: code_width + 2 * QUIET_ZONE_MODULES,
        }
    }

    /// Runs of dark modules in row `y` of the code (quiet zone excluded), as (start, length)
    /// in code coordinates.
    fn dark_runs(&self, y: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        let mut x = 0;
        std::iter::from_fn(move || {
            while x < self.code_width && self.code[(x, y)] != Color::Dark {
                x += 1;
            }
            if x >= self.code_width {
                return None;
            }
            let start = x;
            while x < self.code_width && self.code[(x, y)] == Color::Dark {
                x += 1;
            }
            Some((start, x - start))
        })
    }
}

/// One `<path>` of horizontal runs (a rectangle per run of dark modules, not per module) in
/// module units; the `viewBox` makes it scale to any size, `crispEdges` keeps edges sharp.
fn render_svg(modules: &Modules<'_>, size_px: u32) -> Result<String, std::fmt::Error> {
    let total = modules.total;
    let mut svg = String::with_capacity(256 + modules.code_width * modules.code_width * 4);
    write!(
        svg,
        concat!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
            "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" ",
            "width=\"{size}\" height=\"{size}\" viewBox=\"0 0 {total} {total}\" ",
            "shape-rendering=\"crispEdges\">",
            "<rect width=\"{total}\" height=\"{total}\" fill=\"#fff\"/>",
            "<path fill=\"#000\" d=\""
        ),
        size = size_px,
        total = total
    )?;
    for y in 0..modules.code_width {
        for (x, len) in modules.dark_runs(y) {
            write!(
                svg,
                "M{} {}h{len}v1h-{len}z",
                x + QUIET_ZONE_MODULES,
                y + QUIET_ZONE_MODULES
            )?;
        }
    }
    svg.push_str("\"/></svg>\n");
    Ok(svg)
}

/// Where the code goes in the PNG: pixels per module and the code's top-left corner (the same
/// on both axes).
struct PngLayout {
    size_px: u32,
    scale: usize,
    origin: usize,
}

impl PngLayout {
    fn fit(modules: &Modules<'_>, size_px: u32, url_bytes: usize) -> Result<Self, CardError> {
        let size = size_px as usize;
        let scale = size / modules.total;
        if scale < MIN_MODULE_PX {
            return Err(CardError::Encode(format!(
                "a {url_bytes}-byte url needs a QR code of {} modules (quiet zone included), \
                 which needs size_px >= {} at {MIN_MODULE_PX} px per module; \
                 ask for a larger size_px or shorten the url",
                modules.total,
                modules.total * MIN_MODULE_PX
            )));
        }
        // The light margin left over by the integer scale, split evenly (the odd pixel goes to
        // the right and bottom), plus the quiet zone.
        let origin = (size - scale * modules.total) / 2 + QUIET_ZONE_MODULES * scale;
        Ok(Self {
            size_px,
            scale,
            origin,
        })
    }
}

/// Draws the code into one greyscale buffer (one allocation), a pixel row per module row,
/// copied down for the module's height, then encodes it as PNG.
fn render_png(modules: &Modules<'_>, layout: &PngLayout) -> Result<Vec<u8>, CardError> {
    let PngLayout {
        size_px,
        scale,
        origin,
    } = *layout;
    let size = size_px as usize;
    let mut pixels = vec![LIGHT; size * size];
    for y in 0..modules.code_width {
        let top = origin + y * scale;
        let row_start = top * size;
        let row = &mut pixels[row_start..row_start + size];
        for (x, len) in modules.dark_runs(y) {
            let left = origin + x * scale;
            row[left..left + len * scale].fill(DARK);
        }
        for copy in 1..scale {
            pixels.copy_within(row_start..row_start + size, row_start + copy * size);
        }
    }
    encode_png(&pixels, size_px)
}

fn encode_png(pixels: &[u8], size_px: u32) -> Result<Vec<u8>, CardError> {
    let png_error = |e: png::EncodingError| CardError::Encode(format!("PNG encoding failed: {e}"));
    let mut png_bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut png_bytes, size_px, size_px);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    // Rows repeat `scale` times: the Up filter turns every repeat into zeros, which deflate
    // squeezes to almost nothing, so the fast compressor is enough.
    encoder.set_filter(png::FilterType::Up);
    encoder.set_adaptive_filter(png::AdaptiveFilterType::NonAdaptive);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().map_err(png_error)?;
    writer.write_image_data(pixels).map_err(png_error)?;
    writer.finish().map_err(png_error)?;
    Ok(png_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 39 bytes: fits version 3 at level M (at most 42 bytes), i.e. 29 modules, 37 with the
    /// quiet zone.
    const SHORT_URL: &str = "https://scanloop.example/r/AbCdEf012345";

    /// Decodes PNG bytes into (width, height, luma), insisting on 8-bit greyscale.
    fn decode_png(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(bytes);
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Grayscale);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    /// What a standard QR decoder reads from a greyscale image; exactly one code expected.
    fn scan(width: usize, height: usize, luma: &[u8]) -> String {
        let mut image =
            rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| luma[y * width + x]);
        let grids = image.detect_grids();
        assert_eq!(grids.len(), 1, "expected exactly one QR code in the image");
        let (_meta, content) = grids[0].decode().unwrap();
        content
    }

    fn scan_png(bytes: &[u8], expected_size: u32) -> String {
        let (width, height, luma) = decode_png(bytes);
        assert_eq!((width, height), (expected_size, expected_size));
        scan(width as usize, height as usize, &luma)
    }

    /// Rasterises our own SVG path syntax (`M{x} {y}h{n}v1h-{n}z` in module units) at 8 px per
    /// module, so the SVG is checked by the same decoder as the PNG.
    fn scan_svg(svg: &str, total_modules: usize) -> String {
        const PX: usize = 8;
        let d_start = svg.find(" d=\"").unwrap() + 4;
        let d_end = d_start + svg[d_start..].find('"').unwrap();
        let side = total_modules * PX;
        let mut luma = vec![LIGHT; side * side];
        for run in svg[d_start..d_end].split('M').filter(|s| !s.is_empty()) {
            let numbers: Vec<i64> = run
                .split([' ', 'h', 'v', 'z'])
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect();
            let [x, y, len, 1, back] = numbers[..] else {
                panic!("unexpected path segment {run:?}");
            };
            assert_eq!(back, -len, "segment {run:?} does not close its rectangle");
            let (x, y, len) = (x as usize, y as usize, len as usize);
            for row in y * PX..(y + 1) * PX {
                luma[row * side + x * PX..row * side + (x + len) * PX].fill(DARK);
            }
        }
        scan(side, side, &luma)
    }

    #[test]
    fn png_decodes_to_the_exact_url_at_min_default_and_max_size() {
        for (asked, expected_size) in [(128, 128), (0, 512), (512, 512), (2048, 2048)] {
            let card = render(SHORT_URL, asked).unwrap();
            assert_eq!(
                scan_png(&card.png, expected_size),
                SHORT_URL,
                "size {asked}"
            );
        }
    }

    #[test]
    fn odd_sizes_are_exact_and_decode() {
        for size in [129, 333, 1001, 2047] {
            let card = render(SHORT_URL, size).unwrap();
            assert_eq!(scan_png(&card.png, size), SHORT_URL, "size {size}");
        }
    }

    /// A URL of exactly `len` bytes of lower-case letters only, so the encoder keeps it all in
    /// byte mode and the QR version follows the standard's byte capacity table for level M.
    fn url_of_len(len: usize) -> String {
        let prefix = "https://scanloop.example/r/";
        let mut url = prefix.to_owned();
        url.extend(('a'..='z').cycle().take(len - prefix.len()));
        url
    }

    #[test]
    fn a_url_at_the_length_limit_decodes() {
        let url = url_of_len(MAX_URL_BYTES);
        // 512 bytes at level M needs version 18 (17 holds 504): 89 modules, 97 with the quiet
        // zone, so 2 px per module from 194 px up.
        for size in [194, 512, 2048] {
            let card = render(&url, size).unwrap();
            assert_eq!(scan_png(&card.png, size), url, "size {size}");
        }
        let card = render(&url, 0).unwrap();
        assert!(card.svg.contains("viewBox=\"0 0 97 97\""));
        assert_eq!(scan_svg(&card.svg, 97), url);
    }

    #[test]
    fn a_long_url_on_a_card_too_small_for_it_is_refused_with_the_size_that_fits() {
        let url = url_of_len(MAX_URL_BYTES);
        for size in [128, 193] {
            match render(&url, size) {
                Err(CardError::Encode(message)) => assert!(
                    message.contains("97 modules") && message.contains("size_px >= 194"),
                    "size {size}: {message}"
                ),
                other => panic!("size {size}: expected CardError::Encode, got {other:?}"),
            }
        }
    }

    #[test]
    fn urls_up_to_180_bytes_fit_the_smallest_card() {
        // Version 9 at level M holds 180 bytes: 53 + 8 = 61 modules, 2 px each in 128 px.
        let url = url_of_len(180);
        let card = render(&url, MIN_SIZE_PX).unwrap();
        assert_eq!(scan_png(&card.png, MIN_SIZE_PX), url);
        // One byte more is version 10: 65 modules need 130 px.
        let message = render(&url_of_len(181), MIN_SIZE_PX)
            .unwrap_err()
            .to_string();
        assert!(message.contains("size_px >= 130"), "{message}");
    }

    #[test]
    fn modules_are_whole_pixels_and_the_code_is_centred() {
        // 37 modules at 512 px: 13 px each (481 px), 31 px of margin split 15 left/top and
        // 16 right/bottom, then 4 quiet modules: the finder pattern's corner is at 15 + 52.
        let card = render(SHORT_URL, 512).unwrap();
        let (width, _, luma) = decode_png(&card.png);
        let width = width as usize;
        let dark = |x: usize, y: usize| luma[y * width + x] == DARK;
        let first_dark = luma.iter().position(|&p| p == DARK).unwrap();
        assert_eq!((first_dark % width, first_dark / width), (67, 67));
        // Top-left finder: its top row is 7 modules = 91 px of dark, then light.
        assert!((67..67 + 91).all(|x| dark(x, 67)));
        assert!(!dark(67 + 91, 67));
        // Bottom-right corner of the code: top-right finder ends at 67 + 29 * 13 - 1 = 443,
        // leaving 68 light pixels (4 quiet modules + 16 margin) to the right edge.
        assert!(dark(443, 67));
        assert!((444..512).all(|x| !dark(x, 67)));
        // Only pure black and white: no anti-aliasing to blur module edges.
        assert!(luma.iter().all(|&p| p == DARK || p == LIGHT));
        // The quiet zone and margin rows above the code are fully light.
        assert!(luma[..67 * width].iter().all(|&p| p == LIGHT));
    }

    #[test]
    fn svg_is_a_standalone_scalable_document_that_decodes() {
        let card = render(SHORT_URL, 0).unwrap();
        assert!(
            card.svg
                .starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg ")
        );
        assert!(card.svg.contains("xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(card.svg.contains("viewBox=\"0 0 37 37\""));
        assert!(card.svg.contains("width=\"512\" height=\"512\""));
        assert!(card.svg.trim_end().ends_with("</svg>"));
        assert_eq!(scan_svg(&card.svg, 37), SHORT_URL);
    }

    #[test]
    fn rendering_is_deterministic() {
        assert_eq!(
            render(SHORT_URL, 300).unwrap(),
            render(SHORT_URL, 300).unwrap()
        );
    }

    #[test]
    fn sizes_outside_the_range_are_refused_with_the_range_in_the_message() {
        for size in [1, 64, 127, 2049, 4096, u32::MAX] {
            match render(SHORT_URL, size) {
                Err(CardError::Size(got)) => assert_eq!(got, size),
                other => panic!("size {size}: expected CardError::Size, got {other:?}"),
            }
        }
        let message = render(SHORT_URL, 127).unwrap_err().to_string();
        assert_eq!(
            message,
            "size_px 127 is out of range: size_px must be 128..=2048 (0 for 512)"
        );
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        let too_long = format!("https://scanloop.example/r/{}", "a".repeat(486));
        assert_eq!(too_long.len(), 513);
        let cases: [(&str, &str); 6] = [
            ("", "empty"),
            (&too_long, "513 bytes"),
            ("https://scanloop.example/r/ab\ncd", "U+000A at byte 29"),
            ("https://scanloop.example/r/ab\u{7f}", "U+007F"),
            ("https://scanloop.example/r/\u{85}x", "U+0085"),
            ("https://扫码.example/r/abc", "non-ASCII"),
        ];
        for (url, reason) in cases {
            match render(url, 0) {
                Err(CardError::Url(message)) => {
                    assert!(message.contains(reason), "{url:?}: {message:?}")
                }
                other => panic!("{url:?}: expected CardError::Url, got {other:?}"),
            }
        }
    }
}
