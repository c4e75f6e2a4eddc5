import Crypto
import HummingbirdBcrypt
import NIOPosix
import OCI

/// Generation and hashing of passwords, robot secrets and tokens.
///
/// User passwords are chosen by people, so they are stored with bcrypt (slow on purpose).
/// Everything Wharf generates itself (robot secrets, access tokens, refresh tokens) carries 256
/// random bits, so a SHA-256 of it is as safe as bcrypt and fast enough for every request.
public enum Secrets {
    /// Prefix of personal access tokens, so they are recognisable (and scannable) when leaked.
    public static let accessTokenPrefix = "wharf_pat_"

    /// 32 random bytes as URL-safe base64 without padding (43 characters).
    public static func randomToken() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return base64URL(bytes)
    }

    /// A random password people can type: 24 characters from an unambiguous alphabet.
    public static func randomPassword() -> String {
        let alphabet = Array("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789")
        var generator = SystemRandomNumberGenerator()
        return String((0..<24).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &generator)] })
    }

    public static func newAccessToken() -> String { accessTokenPrefix + randomToken() }

    public static func sha256Hex(_ value: String) -> String {
        sha256Hex(bytes: Array(value.utf8))
    }

    public static func sha256Hex(bytes: [UInt8]) -> String {
        Hex.encode(SHA256.hash(data: bytes))
    }

    /// Compares two strings in time independent of where they differ.
    public static func constantTimeEquals(_ a: String, _ b: String) -> Bool { ConstantTime.equals(a, b) }

    /// bcrypt runs on a thread pool: at cost 12 it takes a quarter of a second.
    public static func hashPassword(_ password: String, cost: UInt8 = 12) async throws -> String {
        try await NIOThreadPool.singleton.runIfActive { Bcrypt.hash(password, cost: cost) }
    }

    public static func verifyPassword(_ password: String, hash: String) async throws -> Bool {
        try await NIOThreadPool.singleton.runIfActive { Bcrypt.verify(password, hash: hash) }
    }

    /// A bcrypt hash another system made (an htpasswd file of CNCF Distribution, Harbor, nginx):
    /// `$2a$`, `$2b$` or `$2y$`, a two-digit cost from 04 to 31, then 53 characters of bcrypt's base64.
    /// Returns the cost.
    @discardableResult
    public static func validateBcryptHash(_ hash: String) throws(AccessError) -> Int {
        let bytes = Array(hash.utf8)
        let alphabet = Set("./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".utf8)
        guard bytes.count == 60, hash.hasPrefix("$2a$") || hash.hasPrefix("$2b$") || hash.hasPrefix("$2y$"), bytes[6] == UInt8(ascii: "$"),
            let cost = Int(String(decoding: bytes[4..<6], as: UTF8.self)), (4...31).contains(cost),
            bytes[7...].allSatisfy(alphabet.contains)
        else {
            throw .invalid("passwordHash must be a bcrypt hash ($2a$, $2b$ or $2y$, cost 04-31, 60 characters); htpasswd -B writes one")
        }
        return cost
    }

    /// The password rule for users: long enough to resist guessing; everything else is the user's choice.
    public static func validatePassword(_ password: String) throws(AccessError) {
        guard password.count >= 12 else { throw .invalid("passwords need at least 12 characters") }
        guard password.count <= 72 else { throw .invalid("passwords may have at most 72 characters (bcrypt's limit)") }
    }

    static func base64URL(_ bytes: [UInt8]) -> String {
        let table = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        var out = ""
        var i = 0
        while i + 3 <= bytes.count {
            let n = (UInt32(bytes[i]) << 16) | (UInt32(bytes[i + 1]) << 8) | UInt32(bytes[i + 2])
            out.append(table[Int(n >> 18 & 63)]); out.append(table[Int(n >> 12 & 63)])
            out.append(table[Int(n >> 6 & 63)]); out.append(table[Int(n & 63)])
            i += 3
        }
        let rest = bytes.count - i
        if rest > 0 {
            var n = UInt32(bytes[i]) << 16
            if rest == 2 { n |= UInt32(bytes[i + 1]) << 8 }
            out.append(table[Int(n >> 18 & 63)]); out.append(table[Int(n >> 12 & 63)])
            if rest == 2 { out.append(table[Int(n >> 6 & 63)]) }
        }
        return out
    }
}
