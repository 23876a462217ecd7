//! Captcha images: five digits drawn from a small bitmap font, each one
//! scaled, sheared and placed with jitter over speckled ground and crossed
//! by lines. Enough to make scripted guessing cost more than a request; the
//! real defence against guessing is the lockout.

use rand::Rng;

use crate::png;

pub const CAPTCHA_LENGTH: usize = 5;
const WIDTH: usize = 160;
const HEIGHT: usize = 60;
const SCALE: usize = 5;

/// 5×7 glyphs of the digits, one row per byte, the high five bits used.
const DIGITS: [[u8; 7]; 10] = [
    [
        0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110,
    ],
    [
        0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110,
    ],
    [
        0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111,
    ],
    [
        0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110,
    ],
    [
        0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010,
    ],
    [
        0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110,
    ],
    [
        0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110,
    ],
    [
        0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000,
    ],
    [
        0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110,
    ],
    [
        0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100,
    ],
];

pub struct Captcha {
    pub answer: String,
    pub png: Vec<u8>,
}

pub fn generate() -> Captcha {
    let mut rng = rand::rng();
    let answer: String = (0..CAPTCHA_LENGTH)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect();
    let mut pixels: Vec<u8> = (0..WIDTH * HEIGHT)
        .map(|_| rng.random_range(200..=255u8))
        .collect();
    let put = |pixels: &mut Vec<u8>, x: i64, y: i64, shade: u8| {
        if (0..WIDTH as i64).contains(&x) && (0..HEIGHT as i64).contains(&y) {
            pixels[y as usize * WIDTH + x as usize] = shade;
        }
    };
    for (i, digit) in answer.bytes().enumerate() {
        let glyph = &DIGITS[usize::from(digit - b'0')];
        let left = 8 + i as i64 * 30 + rng.random_range(-3..=3);
        let top = 9 + rng.random_range(-6..=6);
        // Shear: pixels per glyph row, in tenths.
        let shear = rng.random_range(-4..=4);
        let shade = rng.random_range(0..90u8);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..5 {
                if bits & (0b10000 >> col) == 0 {
                    continue;
                }
                for dy in 0..SCALE {
                    let y = top + (row * SCALE + dy) as i64;
                    let slant = (y - top - 17) * shear / 10;
                    for dx in 0..SCALE {
                        let x = left + (col * SCALE + dx) as i64 + slant;
                        put(&mut pixels, x, y, shade);
                    }
                }
            }
        }
    }
    for _ in 0..5 {
        let (x0, y0) = (
            rng.random_range(0..WIDTH as i64),
            rng.random_range(0..HEIGHT as i64),
        );
        let (x1, y1) = (
            rng.random_range(0..WIDTH as i64),
            rng.random_range(0..HEIGHT as i64),
        );
        let shade = rng.random_range(40..160u8);
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
        for s in 0..=steps {
            put(
                &mut pixels,
                x0 + (x1 - x0) * s / steps,
                y0 + (y1 - y0) * s / steps,
                shade,
            );
        }
    }
    for _ in 0..250 {
        let (x, y) = (
            rng.random_range(0..WIDTH as i64),
            rng.random_range(0..HEIGHT as i64),
        );
        let shade = rng.random_range(0..200u8);
        put(&mut pixels, x, y, shade);
    }
    Captcha {
        answer,
        png: png::greyscale(WIDTH as u32, HEIGHT as u32, &pixels),
    }
}

/// What a person typed, as compared with the answer.
pub fn normalise_answer(typed: &str) -> String {
    typed.chars().filter(|c| !c.is_whitespace()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_five_digits_and_images_are_pngs() {
        let captcha = generate();
        assert_eq!(captcha.answer.len(), CAPTCHA_LENGTH);
        assert!(captcha.answer.bytes().all(|b| b.is_ascii_digit()));
        assert!(captcha.png.starts_with(b"\x89PNG"));
        assert_eq!(normalise_answer(" 12 345 "), "12345");
    }
}
