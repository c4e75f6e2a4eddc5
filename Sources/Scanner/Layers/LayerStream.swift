import CZstd
import CompressNIO
import Foundation
import NIOCore

/// Where a layer's bytes come from, one chunk at a time (a file, a blob in storage, a decompressor).
public protocol ChunkSource {
    /// The next chunk, or nil at the end. Chunks may be of any size, but never empty.
    mutating func nextChunk() async throws -> ByteBuffer?
}

public enum LayerError: Error, Sendable, Equatable, CustomStringConvertible {
    case corrupt(String)
    case unsupported(String)

    public var description: String {
        switch self {
        case .corrupt(let why): "the layer is corrupt: \(why)"
        case .unsupported(let why): "unsupported layer: \(why)"
        }
    }
}

/// How a layer is compressed, told by its first bytes (media types lie, and Docker's lie most).
public enum LayerCompression: String, Sendable {
    case none, gzip, zstd

    public static func detect(_ prefix: ByteBuffer) -> LayerCompression {
        let bytes = prefix.getBytes(at: prefix.readerIndex, length: min(4, prefix.readableBytes)) ?? []
        if bytes.starts(with: [0x1F, 0x8B]) { return .gzip }
        if bytes.starts(with: [0x28, 0xB5, 0x2F, 0xFD]) { return .zstd }
        return .none
    }
}

/// Limits that stop decompression bombs before they cost more than a bounded amount of CPU.
public struct ExpansionLimits: Sendable {
    /// Decompressed bytes of one layer.
    public var maximumBytes: Int64 = 8 << 30
    /// Decompressed-to-compressed ratio refused once `ratioCheckAfter` bytes came out. Real layers
    /// stay under 20:1; deflate cannot exceed about 1032:1, so a bomb shows itself early.
    public var maximumRatio: Int64 = 200
    public var ratioCheckAfter: Int64 = 256 << 20

    public init() {}
}

/// A layer's uncompressed tar bytes as a `ByteSource`, whatever the compression: the first chunk
/// decides, and every byte that comes out is counted against `ExpansionLimits`.
public struct LayerByteSource<Raw: ChunkSource>: ByteSource, ChunkSource {
    private var decoder: Decoder
    private var buffer = ByteBuffer()
    public private(set) var expandedBytes: Int64 = 0
    public let limits: ExpansionLimits
    public private(set) var compression: LayerCompression = .none

    private enum Decoder {
        case taken
        case pending(Raw)
        case plain(Raw)
        case gzip(GzipChunks<Raw>)
        case zstd(ZstdChunks<Raw>)
    }

    public init(_ raw: Raw, limits: ExpansionLimits = ExpansionLimits()) {
        self.decoder = .pending(raw)
        self.limits = limits
    }

    public mutating func read(_ count: Int) async throws -> [UInt8]? {
        while buffer.readableBytes < count {
            guard try await fill() else {
                if buffer.readableBytes == 0 { return nil }
                throw TarError.truncated
            }
        }
        return buffer.readBytes(length: count)
    }

    public mutating func skip(_ count: Int64) async throws {
        var left = count
        while left > 0 {
            if buffer.readableBytes == 0 {
                guard try await fill() else { throw TarError.truncated }
            }
            let step = Int(min(Int64(buffer.readableBytes), left))
            buffer.moveReaderIndex(forwardBy: step)
            left -= Int64(step)
        }
    }

    /// The decoded bytes not read yet, whatever their size (for copying a layer out whole).
    public mutating func nextChunk() async throws -> ByteBuffer? {
        if buffer.readableBytes == 0 {
            guard try await fill() else { return nil }
        }
        defer { buffer = ByteBuffer() }
        return buffer
    }

    /// Appends the next decoded chunk; false at the end of the layer.
    private mutating func fill() async throws -> Bool {
        guard var chunk = try await nextDecoded() else { return false }
        expandedBytes += Int64(chunk.readableBytes)
        if expandedBytes > limits.maximumBytes {
            throw TarError.limitExceeded("the layer expands to more than \(limits.maximumBytes) bytes")
        }
        if expandedBytes > limits.ratioCheckAfter, let compressed = compressedBytes, compressed > 0,
            expandedBytes / compressed > limits.maximumRatio
        {
            throw TarError.limitExceeded(
                "the layer expands more than \(limits.maximumRatio) times (\(expandedBytes) bytes from \(compressed)): a decompression bomb")
        }
        if buffer.readableBytes == 0 {
            buffer = chunk
        } else {
            // Compact only when the consumed part dominates: tiny chunks must not make reads quadratic.
            if buffer.readerIndex > buffer.readableBytes { buffer.discardReadBytes() }
            buffer.writeBuffer(&chunk)
        }
        return true
    }

    private var compressedBytes: Int64? {
        switch decoder {
        case .gzip(let chunks): chunks.consumed
        case .zstd(let chunks): chunks.consumed
        case .pending, .plain, .taken: nil
        }
    }

    private mutating func nextDecoded() async throws -> ByteBuffer? {
        // Each case empties the enum (`decoder = .taken`) before mutating its binding, so the state
        // (and the input buffer zlib writes through) is uniquely referenced and never copied on write.
        switch decoder {
        case .taken:
            return nil  // an earlier call threw; the layer is done
        case .pending(var raw):
            decoder = .taken
            guard var first = try await raw.nextChunk() else { decoder = .plain(raw); return nil }
            // The magic number may straddle tiny chunks.
            while first.readableBytes < 4, var more = try await raw.nextChunk() { first.writeBuffer(&more) }
            compression = LayerCompression.detect(first)
            switch compression {
            case .none:
                decoder = .plain(raw)
                return first
            case .gzip:
                decoder = .gzip(try GzipChunks(raw, first: first))
            case .zstd:
                decoder = .zstd(try ZstdChunks(raw, first: first))
            }
            return try await nextDecoded()
        case .plain(var raw):
            decoder = .taken
            let chunk = try await raw.nextChunk()
            decoder = .plain(raw)
            return chunk
        case .gzip(var chunks):
            decoder = .taken
            let chunk = try await chunks.nextChunk()
            decoder = .gzip(chunks)
            return chunk
        case .zstd(var chunks):
            decoder = .taken
            let chunk = try await chunks.nextChunk()
            decoder = .zstd(chunks)
            return chunk
        }
    }
}

/// gzip (RFC 1952) inflated in 64 KiB pieces with zlib, through compress-nio.
public struct GzipChunks<Raw: ChunkSource>: ChunkSource {
    static var enough: Int { 16 << 10 }
    private var raw: Raw
    private var input: ByteBuffer?
    private let inflater: ZlibDecompressor
    private var ended = false
    public private(set) var consumed: Int64 = 0

    public init(_ raw: Raw, first: ByteBuffer? = nil) throws {
        self.raw = raw
        self.input = first
        self.consumed = Int64(first?.readableBytes ?? 0)
        self.inflater = try ZlibDecompressor(algorithm: .gzip)
    }

    public mutating func nextChunk() async throws -> ByteBuffer? {
        guard !ended else { return nil }
        var output = ByteBufferAllocator().buffer(capacity: 64 << 10)
        while true {
            if input == nil || input!.readableBytes == 0 {
                input = try await raw.nextChunk()
                guard let chunk = input else {
                    ended = true
                    // zlib could not tell us whether the stream ended; the tar reader notices a cut archive.
                    return output.readableBytes > 0 ? output : nil
                }
                consumed += Int64(chunk.readableBytes)
            }
            let before = input!.readableBytes
            do {
                try inflater.inflate(from: &input!, to: &output)
            } catch let error as CompressNIOError where error == .bufferOverflow {
                return output  // output full
            } catch let error as CompressNIOError where error == .inputBufferOverflow {
                input = nil  // needs more input
                if output.readableBytes >= Self.enough { return output }
                continue
            } catch let error as CompressNIOError where error == .corruptData {
                throw LayerError.corrupt("invalid gzip data")
            }
            // No error: either all input was used, or the gzip member ended (zlib stops there and
            // leaves the rest, which layers never carry; it is ignored like tar's trailing zeros).
            if input!.readableBytes > 0 || input!.readableBytes == before {
                ended = true
                return output.readableBytes > 0 ? output : nil
            }
            // Tiny input chunks: keep filling this buffer rather than handing out slivers.
            if output.readableBytes >= Self.enough { return output }
        }
    }
}

/// zstd (RFC 8878) frames decompressed with libzstd's streaming API.
public struct ZstdChunks<Raw: ChunkSource>: ChunkSource {
    private final class Stream {
        let pointer: OpaquePointer
        init() throws {
            guard let stream = ZSTD_createDStream() else { throw LayerError.unsupported("zstd: out of memory") }
            pointer = stream
            // 128 MiB windows at most, zstd's own default: what `zstd --long` writes, never more.
            _ = ZSTD_DCtx_setParameter(stream, ZSTD_d_windowLogMax, 27)
        }
        deinit { ZSTD_freeDStream(pointer) }
    }

    private var raw: Raw
    private var input: ByteBuffer?
    private let stream: Stream
    private var inFrame = false
    private var rawEnded = false
    private var ended = false
    public private(set) var consumed: Int64 = 0

    public init(_ raw: Raw, first: ByteBuffer? = nil) throws {
        self.raw = raw
        self.input = first
        self.consumed = Int64(first?.readableBytes ?? 0)
        self.stream = try Stream()
    }

    public mutating func nextChunk() async throws -> ByteBuffer? {
        guard !ended else { return nil }
        let capacity = ZSTD_DStreamOutSize()
        var output = ByteBufferAllocator().buffer(capacity: capacity)
        while true {
            if !rawEnded, input == nil || input!.readableBytes == 0 {
                if let chunk = try await raw.nextChunk() {
                    input = chunk
                    consumed += Int64(chunk.readableBytes)
                } else {
                    rawEnded = true
                    input = ByteBuffer()
                }
            }
            if rawEnded, !inFrame {
                ended = true
                return output.readableBytes > 0 ? output : nil
            }
            let stream = self.stream.pointer
            var hint = 0
            var produced = 0
            let used = try input!.withUnsafeReadableBytes { source -> Int in
                try output.withUnsafeMutableWritableBytes { target -> Int in
                    var inBuffer = ZSTD_inBuffer(src: source.baseAddress, size: source.count, pos: 0)
                    var outBuffer = ZSTD_outBuffer(dst: target.baseAddress, size: target.count, pos: 0)
                    hint = ZSTD_decompressStream(stream, &outBuffer, &inBuffer)
                    if ZSTD_isError(hint) != 0 {
                        throw LayerError.corrupt("zstd: " + String(cString: ZSTD_getErrorName(hint)))
                    }
                    produced = outBuffer.pos
                    return inBuffer.pos
                }
            }
            input!.moveReaderIndex(forwardBy: used)
            output.moveWriterIndex(forwardBy: produced)
            inFrame = hint != 0  // 0: a frame just ended (another may follow)
            // With all input given, zstd may still hold output; a call that yields nothing means the data was cut.
            if rawEnded, inFrame, produced == 0, output.writableBytes > 0 { throw TarError.truncated }
            if output.writableBytes == 0 { return output }
            if input!.readableBytes == 0, output.readableBytes >= 16 << 10 { return output }
        }
    }
}

/// A file's bytes (or a range of them), read in 1 MiB chunks on demand.
public struct FileChunks: ChunkSource {
    private let handle: FileHandle
    private var left: Int64
    private let chunkSize: Int

    public init(path: String, offset: Int64 = 0, length: Int64? = nil, chunkSize: Int = 1 << 20) throws {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw LayerError.unsupported("cannot open \(path)")
        }
        try handle.seek(toOffset: UInt64(offset))
        self.handle = handle
        self.left = length ?? Int64.max
        self.chunkSize = chunkSize
    }

    public mutating func nextChunk() async throws -> ByteBuffer? {
        guard left > 0 else { return nil }
        let wanted = Int(min(Int64(chunkSize), left))
        guard let data = try handle.read(upToCount: wanted), !data.isEmpty else {
            if left != Int64.max { throw TarError.truncated }
            left = 0
            return nil
        }
        if left != Int64.max { left -= Int64(data.count) }
        return ByteBuffer(bytes: data)
    }
}

/// Chunks held in memory (tests, small blobs). Advances an index rather than removing chunks,
/// so copies of the source share the array instead of duplicating it.
public struct BufferChunks: ChunkSource {
    private let chunks: [ByteBuffer]
    private var next = 0

    public init(_ bytes: [UInt8], chunkSize: Int = 64 << 10) {
        let size = max(1, chunkSize)
        chunks = stride(from: 0, to: bytes.count, by: size).map { ByteBuffer(bytes: bytes[$0..<min($0 + size, bytes.count)]) }
    }

    public mutating func nextChunk() async throws -> ByteBuffer? {
        guard next < chunks.count else { return nil }
        defer { next += 1 }
        return chunks[next]
    }
}
