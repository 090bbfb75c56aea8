--[[
Wireshark dissector for SUDP ("Secure UDP"), wire versions 2 and 3
(trio-sudp, the Go `sudp` libraries and the tunelo VPN built on them).

Install
    mkdir -p ~/.local/lib/wireshark/plugins
    cp sudp.lua ~/.local/lib/wireshark/plugins/
  then restart Wireshark (or Analyze > Reload Lua Plugins, Ctrl+Shift+L).
  "Help > About Wireshark > Folders" (or `tshark -G folders`) shows the
  "Personal Lua Plugins" folder, should your version use another one.

Use
  * Datagrams to or from UDP port 7000 (tunelo's default) are decoded as SUDP.
    Change it in Preferences > Protocols > SUDP ("UDP port"; 0 disables it),
    or on the command line: -o sudp.udp_port:17102
  * Elsewhere a heuristic recognises SUDP by its header alone (version 2/3,
    kind 1..4, a len that matches both the kind and the datagram size), so
    captures on any port decode without configuration. It can be switched off
    under Analyze > Enabled Protocols (sudp_udp) or with --disable-heuristic sudp_udp.
  * "Decode As... > UDP port > SUDP" also works, e.g. -d udp.port==17103,sudp
  * Without installing: tshark -X lua_script:sudp.lua -r capture.pcap
  * Display filters: sudp, sudp.kind == 3, sudp.epoch, sudp.addr == 1000,
    sudp.control.flags.keepalive, sudp.hb.status == 0 (bad v2 CRC), ...

What it shows
  The 20-byte header (ver, kind, len, src, dst, epoch, time; time also as a
  date: milliseconds since the Unix epoch in v2, microseconds in v3) and the
  body of each kind. The header tag "hb" is a CRC-32 in v2, which is unkeyed, so
  it is recomputed and a mismatch is flagged; in v3 it is a BLAKE2b digest keyed
  with the peer's pre-shared key and is only displayed. Data bodies are AES-GCM
  encrypted (and hold their hb inside the ciphertext): only nonce, ciphertext
  and GCM tag are shown. Malformed datagrams get expert info, never a Lua error.

Wire format: SPEC.md of trio-sudp, sections 1, 2 and 7. Written to run on the
Lua 5.1 to 5.4 interpreters Wireshark has shipped with (no bit-operation
library or integer operators are assumed).
]]

local sudp = Proto("sudp", "Secure UDP (SUDP)")

local DEFAULT_UDP_PORT = 7000 -- tunelo's listen port
local HEADER_LEN = 20
local NONCE_LEN = 12
local GCM_TAG_LEN = 16
local EPK_LEN = 65 -- uncompressed SEC1 P-256 point: 0x04 || X || Y
local SIG_LEN = 64 -- ECDSA r || s, 32 bytes each
local FLAGS_LEN = 4
local CONTROL_DATA_LEN = 8

-- What differs between the two wire versions: the size and nature of the
-- header tag (hb) and the unit of the header's timestamp.
local VERSIONS = {
    [2] = { hb_len = 4, ticks_per_sec = 1000, ns_per_tick = 1000000, unit = "ms",
            hb_name = "CRC-32" },
    [3] = { hb_len = 24, ticks_per_sec = 1000000, ns_per_tick = 1000, unit = "µs",
            hb_name = "BLAKE2b-192, keyed" },
}

local KIND_CLIENT_HANDSHAKE = 1
local KIND_SERVER_HANDSHAKE = 2
local KIND_CONTROL = 3
local KIND_DATA = 4

local kind_names = {
    [KIND_CLIENT_HANDSHAKE] = "ClientHandshake",
    [KIND_SERVER_HANDSHAKE] = "ServerHandshake",
    [KIND_CONTROL] = "Control",
    [KIND_DATA] = "Data",
}

local version_names = { [2] = "v2 (CRC-32 tag, ms clock)", [3] = "v3 (BLAKE2b tag, µs clock)" }

-- Control flag bits, in display order. NoSession is trio-sudp's extension (SPEC §7).
local control_flags = {
    { mask = 0x01, name = "KeepAlive" },
    { mask = 0x02, name = "RTT" },
    { mask = 0x04, name = "KeepAliveAck" },
    { mask = 0x08, name = "EpochAck" },
    { mask = 0x10, name = "NoSession" },
}
local KNOWN_FLAGS = 0x1f

-- Same numbering as Wireshark's own checksum status fields.
local HB_BAD, HB_GOOD, HB_UNVERIFIED = 0, 1, 2
local hb_status_names = { [HB_BAD] = "Bad", [HB_GOOD] = "Good", [HB_UNVERIFIED] = "Unverified" }

-- Body length each kind must have, per version; Data is variable (nil here).
local function expected_body_len(ver, kind)
    local hb_len = VERSIONS[ver].hb_len
    if kind == KIND_CLIENT_HANDSHAKE or kind == KIND_SERVER_HANDSHAKE then
        return hb_len + EPK_LEN + SIG_LEN -- 133 (v2) / 153 (v3)
    elseif kind == KIND_CONTROL then
        return hb_len + FLAGS_LEN + CONTROL_DATA_LEN + SIG_LEN -- 80 (v2) / 100 (v3)
    end
    return nil
end

---------------------------------------------------------------------------
-- Fields
---------------------------------------------------------------------------

local set_not_set = { "Set", "Not set" }

local f = {
    ver = ProtoField.uint8("sudp.ver", "Version", base.DEC, version_names),
    kind = ProtoField.uint8("sudp.kind", "Kind", base.DEC, kind_names),
    len = ProtoField.uint16("sudp.len", "Body length", base.DEC),
    src = ProtoField.uint16("sudp.src", "Source virtual address", base.DEC),
    dst = ProtoField.uint16("sudp.dst", "Destination virtual address", base.DEC),
    addr = ProtoField.uint16("sudp.addr", "Source or destination virtual address", base.DEC),
    epoch = ProtoField.uint32("sudp.epoch", "Epoch", base.DEC),
    time = ProtoField.uint64("sudp.time", "Time", base.DEC),
    time_date = ProtoField.absolute_time("sudp.time.date", "Time (date)", base.UTC),

    hb = ProtoField.bytes("sudp.hb", "Header tag (hb)"),
    hb_crc = ProtoField.uint32("sudp.hb.crc32", "CRC-32", base.HEX),
    hb_crc_computed = ProtoField.uint32("sudp.hb.crc32.computed", "Computed CRC-32", base.HEX),
    hb_status = ProtoField.uint8("sudp.hb.status", "Header tag status", base.DEC,
                                 hb_status_names),

    epk = ProtoField.bytes("sudp.handshake.epk", "Ephemeral public key"),
    epk_x = ProtoField.bytes("sudp.handshake.epk.x", "X"),
    epk_y = ProtoField.bytes("sudp.handshake.epk.y", "Y"),

    flags = ProtoField.uint32("sudp.control.flags", "Flags", base.HEX),
    flag_keepalive = ProtoField.bool("sudp.control.flags.keepalive", "KeepAlive",
                                     32, set_not_set, 0x01),
    flag_rtt = ProtoField.bool("sudp.control.flags.rtt", "RTT (unused)", 32, set_not_set, 0x02),
    flag_keepalive_ack = ProtoField.bool("sudp.control.flags.keepalive_ack", "KeepAliveAck",
                                         32, set_not_set, 0x04),
    flag_epoch_ack = ProtoField.bool("sudp.control.flags.epoch_ack", "EpochAck",
                                     32, set_not_set, 0x08),
    flag_no_session = ProtoField.bool("sudp.control.flags.no_session",
                                      "NoSession (trio-sudp extension)", 32, set_not_set, 0x10),
    control_data = ProtoField.uint64("sudp.control.data", "Data", base.DEC),

    sig = ProtoField.bytes("sudp.sig", "Signature (ECDSA P-256/SHA-256)"),
    sig_r = ProtoField.bytes("sudp.sig.r", "r"),
    sig_s = ProtoField.bytes("sudp.sig.s", "s"),

    nonce = ProtoField.bytes("sudp.data.nonce", "Nonce"),
    ciphertext = ProtoField.bytes("sudp.data.encrypted", "Encrypted hb and payload"),
    payload_len = ProtoField.uint16("sudp.data.payload_len", "Payload length", base.DEC),
    gcm_tag = ProtoField.bytes("sudp.data.gcm_tag", "GCM tag"),

    body = ProtoField.bytes("sudp.body", "Undecoded body"),
    trailing = ProtoField.bytes("sudp.trailing", "Bytes after len"),
}
local flag_fields = { f.flag_keepalive, f.flag_rtt, f.flag_keepalive_ack, f.flag_epoch_ack,
                      f.flag_no_session }

local field_list = {}
for _, field in pairs(f) do field_list[#field_list + 1] = field end
sudp.fields = field_list

local ef = {
    short = ProtoExpert.new("sudp.malformed.short", "Datagram too short for an SUDP header",
                            expert.group.MALFORMED, expert.severity.ERROR),
    bad_version = ProtoExpert.new("sudp.malformed.version", "Unknown SUDP version",
                                  expert.group.MALFORMED, expert.severity.ERROR),
    bad_kind = ProtoExpert.new("sudp.malformed.kind", "Unknown SUDP message kind",
                               expert.group.MALFORMED, expert.severity.ERROR),
    len_beyond = ProtoExpert.new("sudp.malformed.len_beyond",
                                 "len runs past the end of the datagram",
                                 expert.group.MALFORMED, expert.severity.ERROR),
    bad_len = ProtoExpert.new("sudp.malformed.len", "len does not fit the message kind",
                              expert.group.MALFORMED, expert.severity.ERROR),
    truncated = ProtoExpert.new("sudp.truncated", "Datagram truncated by the capture (snaplen)",
                                expert.group.UNDECODED, expert.severity.WARN),
    trailing = ProtoExpert.new("sudp.trailing", "Bytes after len (ignored by Go peers)",
                               expert.group.PROTOCOL, expert.severity.NOTE),
    crc_bad = ProtoExpert.new("sudp.hb.crc32.bad", "Bad header CRC-32",
                              expert.group.CHECKSUM, expert.severity.ERROR),
    epk_format = ProtoExpert.new("sudp.handshake.epk.format",
                                 "Ephemeral key is not an uncompressed SEC1 point",
                                 expert.group.PROTOCOL, expert.severity.WARN),
    unknown_flags = ProtoExpert.new("sudp.control.flags.unknown", "Unknown control flag bits",
                                    expert.group.PROTOCOL, expert.severity.NOTE),
}
sudp.experts = { ef.short, ef.bad_version, ef.bad_kind, ef.len_beyond, ef.bad_len, ef.truncated,
                 ef.trailing, ef.crc_bad, ef.epk_format, ef.unknown_flags }

---------------------------------------------------------------------------
-- CRC-32 (IEEE, zlib's crc32) in plain arithmetic.
-- Wireshark has embedded Lua 5.1 (bit library), 5.2 (bit32) and 5.3/5.4 (native
-- operators, which 5.1/5.2 cannot even parse); doing it with + - * / % works on
-- all of them. It runs over 20 bytes per packet, so speed does not matter.
---------------------------------------------------------------------------

-- XOR of two unsigned 32-bit integers, one bit at a time.
local function bxor(a, b)
    local result, bit_value = 0, 1
    while a > 0 or b > 0 do
        local abit, bbit = a % 2, b % 2
        if abit ~= bbit then result = result + bit_value end
        a, b, bit_value = (a - abit) / 2, (b - bbit) / 2, bit_value * 2
    end
    return result
end

local CRC_TABLE = {}
for i = 0, 255 do
    local c = i
    for _ = 1, 8 do
        if c % 2 == 1 then
            c = bxor((c - 1) / 2, 0xEDB88320) -- reflected polynomial
        else
            c = c / 2
        end
    end
    CRC_TABLE[i] = c
end

local function crc32(bytes) -- bytes: a ByteArray
    local crc = 0xFFFFFFFF
    for i = 0, bytes:len() - 1 do
        local low = crc % 256
        crc = bxor(CRC_TABLE[bxor(low, bytes:get_index(i))], (crc - low) / 256)
    end
    return bxor(crc, 0xFFFFFFFF)
end

---------------------------------------------------------------------------
-- Helpers
---------------------------------------------------------------------------

local function vaddr_label(addr)
    return addr == 0 and " (server)" or ""
end

local function flag_names(flags)
    local names = {}
    for _, flag in ipairs(control_flags) do
        if math.floor(flags / flag.mask) % 2 == 1 then names[#names + 1] = flag.name end
    end
    if flags > KNOWN_FLAGS then
        names[#names + 1] = string.format("unknown:0x%x", flags - flags % (KNOWN_FLAGS + 1))
    end
    if #names == 0 then return "(no flags)" end
    return table.concat(names, ",")
end

-- The header time as an NSTime. UInt64 arithmetic keeps it exact: µs values
-- are close to 2^53, beyond which a Lua double would round.
local function header_nstime(time64, v)
    local secs = (time64 / v.ticks_per_sec):tonumber()
    local ticks = (time64 % v.ticks_per_sec):tonumber()
    return NSTime.new(secs, ticks * v.ns_per_tick)
end

-- Adds the hb item. For v2 the CRC is recomputed over header bytes 0..19;
-- returns false on a mismatch, true otherwise.
local function add_hb(tree, tvb, offset, ver)
    local v = VERSIONS[ver]
    local range = tvb:range(offset, v.hb_len)
    local item = tree:add(f.hb, range)
    item:append_text(" (" .. v.hb_name .. ")")
    if ver ~= 2 then
        -- Keyed with the peer's pre-shared key, which the capture does not carry.
        item:add(f.hb_status, range, HB_UNVERIFIED):set_generated()
        return true
    end
    local got = range:uint()
    local want = crc32(tvb:range(0, HEADER_LEN):bytes())
    item:add(f.hb_crc, range)
    item:add(f.hb_crc_computed, tvb:range(0, HEADER_LEN), want):set_generated()
    local ok = got == want
    item:add(f.hb_status, range, ok and HB_GOOD or HB_BAD):set_generated()
    if ok then
        item:append_text(" [correct]")
    else
        item:append_text(" [incorrect]")
        item:add_proto_expert_info(ef.crc_bad, string.format(
            "Bad header CRC-32: 0x%08x, the header gives 0x%08x", got, want))
    end
    return ok
end

local function add_signature(tree, tvb, offset)
    local item = tree:add(f.sig, tvb:range(offset, SIG_LEN))
    item:add(f.sig_r, tvb:range(offset, 32))
    item:add(f.sig_s, tvb:range(offset + 32, 32))
end

---------------------------------------------------------------------------
-- Bodies, dissected from the body's offset. The caller has checked that the
-- whole body is captured and long enough for every field read here, so no
-- range can fall outside the buffer (which would be a Lua error).
-- They return two pieces of Info text: one for right after the kind name,
-- one for the end of the line.
---------------------------------------------------------------------------

local function dissect_handshake(tvb, tree, offset, ver)
    local note = ""
    if not add_hb(tree, tvb, offset, ver) then note = " [bad CRC]" end
    offset = offset + VERSIONS[ver].hb_len

    local epk_range = tvb:range(offset, EPK_LEN)
    local epk = tree:add(f.epk, epk_range)
    if epk_range:range(0, 1):uint() == 0x04 then
        epk:add(f.epk_x, epk_range:range(1, 32))
        epk:add(f.epk_y, epk_range:range(33, 32))
    else
        epk:add_proto_expert_info(ef.epk_format)
    end
    add_signature(tree, tvb, offset + EPK_LEN)
    return "", note
end

local function dissect_control(tvb, tree, offset, ver)
    local note = ""
    if not add_hb(tree, tvb, offset, ver) then note = " [bad CRC]" end
    offset = offset + VERSIONS[ver].hb_len

    local flags_range = tvb:range(offset, FLAGS_LEN)
    local flags = flags_range:uint()
    local names = flag_names(flags)
    local flags_item = tree:add(f.flags, flags_range)
    flags_item:append_text(" (" .. names .. ")")
    for _, field in ipairs(flag_fields) do flags_item:add(field, flags_range) end
    if flags > KNOWN_FLAGS then
        flags_item:add_proto_expert_info(ef.unknown_flags, string.format(
            "Unknown control flag bits 0x%08x (Go peers ignore them)",
            flags - flags % (KNOWN_FLAGS + 1)))
    end
    tree:add(f.control_data, tvb:range(offset + FLAGS_LEN, CONTROL_DATA_LEN))
    add_signature(tree, tvb, offset + FLAGS_LEN + CONTROL_DATA_LEN)
    return " " .. names, note
end

-- nonce || AES-256-GCM(hb || payload) || GCM tag; the hb is inside the ciphertext.
local function dissect_data(tvb, tree, offset, ver, body_len)
    local hb_len = VERSIONS[ver].hb_len
    local cipher_len = body_len - NONCE_LEN - GCM_TAG_LEN
    tree:add(f.nonce, tvb:range(offset, NONCE_LEN))
    local cipher = tree:add(f.ciphertext, tvb:range(offset + NONCE_LEN, cipher_len))
    cipher:append_text(" [AES-256-GCM, not decrypted]")
    local payload_len = cipher_len - hb_len
    cipher:add(f.payload_len, tvb:range(offset + NONCE_LEN, cipher_len), payload_len)
        :set_generated()
    tree:add(f.gcm_tag, tvb:range(offset + NONCE_LEN + cipher_len, GCM_TAG_LEN))
    return "", string.format(", %d-byte payload", payload_len)
end

---------------------------------------------------------------------------
-- Main dissector
---------------------------------------------------------------------------

local function set_info(pinfo, text)
    pinfo.cols.protocol = "SUDP"
    pinfo.cols.info = text
end

function sudp.dissector(tvb, pinfo, tree)
    local captured = tvb:len()           -- bytes we can read
    local wire = tvb:reported_len()      -- bytes the datagram had on the wire

    if wire < HEADER_LEN then
        local root = tree:add(sudp, tvb:range(0, captured))
        if captured > 0 then root:add(f.body, tvb:range(0, captured)) end
        root:add_proto_expert_info(ef.short, string.format(
            "Datagram too short for an SUDP header: %d of %d bytes", wire, HEADER_LEN))
        set_info(pinfo, string.format("Malformed: %d-byte datagram, shorter than the header", wire))
        return captured
    end
    if captured < HEADER_LEN then
        local root = tree:add(sudp, tvb:range(0, captured))
        root:add_proto_expert_info(ef.truncated)
        set_info(pinfo, "SUDP header cut short by the capture")
        return captured
    end

    local ver = tvb:range(0, 1):uint()
    local kind = tvb:range(1, 1):uint()
    local len = tvb:range(2, 2):uint()
    local src = tvb:range(4, 2):uint()
    local dst = tvb:range(6, 2):uint()
    local epoch = tvb:range(8, 4):uint()
    local v = VERSIONS[ver]
    local kind_name = kind_names[kind] or string.format("kind %d", kind)

    local root = tree:add(sudp, tvb:range(0, captured))
    root:append_text(string.format(", v%d %s, %d → %d, epoch %d", ver, kind_name, src, dst,
                                   epoch))

    -- Header.
    local header = root:add(tvb:range(0, HEADER_LEN), "Header")
    local ver_item = header:add(f.ver, tvb:range(0, 1))
    local kind_item = header:add(f.kind, tvb:range(1, 1))
    local len_item = header:add(f.len, tvb:range(2, 2))
    header:add(f.src, tvb:range(4, 2)):append_text(vaddr_label(src))
    header:add(f.dst, tvb:range(6, 2)):append_text(vaddr_label(dst))
    header:add(f.addr, tvb:range(4, 2)):set_hidden()
    header:add(f.addr, tvb:range(6, 2)):set_hidden()
    header:add(f.epoch, tvb:range(8, 4))
    local time_range = tvb:range(12, 8)
    local time_item = header:add(f.time, time_range)
    if v then
        time_item:append_text(" " .. v.unit)
        header:add(f.time_date, time_range, header_nstime(time_range:uint64(), v)):set_generated()
    end

    -- Info: "v3 Control KeepAlive 1000→0 epoch 15868"; the kind's details go
    -- after its name, notes and problems at the end.
    local function info(detail, note)
        return string.format("v%d %s%s %d→%d epoch %d%s", ver, kind_name, detail, src, dst,
                             epoch, note)
    end
    local body_offset = HEADER_LEN

    -- An unknown version leaves the hb size unknown, an unknown kind the body
    -- layout: either way the body is shown raw.
    local problem
    if not v then
        ver_item:add_proto_expert_info(ef.bad_version, string.format(
            "Unknown SUDP version %d (only 2 and 3 exist)", ver))
        problem = string.format("bad version %d", ver)
    elseif not kind_names[kind] then
        kind_item:add_proto_expert_info(ef.bad_kind, string.format(
            "Unknown SUDP message kind %d (1..4 exist)", kind))
        problem = string.format("bad kind %d", kind)
    end
    if problem then
        if captured > HEADER_LEN then
            root:add(f.body, tvb:range(HEADER_LEN, captured - HEADER_LEN))
        end
        set_info(pinfo, info("", " [Malformed: " .. problem .. "]"))
        return captured
    end

    -- len against the datagram.
    local body_len = len
    if HEADER_LEN + len > wire then
        len_item:add_proto_expert_info(ef.len_beyond, string.format(
            "len %d runs past the end of the datagram: only %d body bytes", len, wire - HEADER_LEN))
        problem = string.format("len %d > %d bytes present", len, wire - HEADER_LEN)
        body_len = wire - HEADER_LEN
    elseif HEADER_LEN + len < wire then
        local extra = wire - HEADER_LEN - len
        local trailing_item
        if captured > HEADER_LEN + len then
            trailing_item = root:add(f.trailing, tvb:range(HEADER_LEN + len,
                                                           captured - HEADER_LEN - len))
        else
            trailing_item = root
        end
        trailing_item:add_proto_expert_info(ef.trailing, string.format(
            "%d byte(s) after len (ignored by Go peers)", extra))
    end

    -- len against the kind.
    local want = expected_body_len(ver, kind)
    local min_data = NONCE_LEN + v.hb_len + GCM_TAG_LEN
    if not problem then
        if want and len ~= want then
            len_item:add_proto_expert_info(ef.bad_len, string.format(
                "len %d, but a v%d %s body is %d bytes", len, ver, kind_name, want))
            problem = string.format("len %d, expected %d", len, want)
        elseif kind == KIND_DATA and len < min_data then
            len_item:add_proto_expert_info(ef.bad_len, string.format(
                "len %d, but v%d Data needs at least %d bytes (nonce, hb, GCM tag)",
                len, ver, min_data))
            problem = string.format("len %d < %d", len, min_data)
        end
    end

    -- Body: decode it only when all of its fields are there.
    local needed = want or min_data
    local detail, note = "", ""
    if body_len >= needed and captured >= HEADER_LEN + body_len then
        local body_tree = root:add(tvb:range(body_offset, body_len), kind_name .. " body")
        if kind == KIND_CONTROL then
            detail, note = dissect_control(tvb, body_tree, body_offset, ver)
        elseif kind == KIND_DATA then
            detail, note = dissect_data(tvb, body_tree, body_offset, ver, body_len)
        else
            detail, note = dissect_handshake(tvb, body_tree, body_offset, ver)
        end
    else
        local present = math.min(body_len, captured - HEADER_LEN)
        if present > 0 then root:add(f.body, tvb:range(body_offset, present)) end
        if not problem and captured < wire then
            root:add_proto_expert_info(ef.truncated)
            note = " [truncated by the capture]"
        end
    end

    if problem then note = note .. " [Malformed: " .. problem .. "]" end
    set_info(pinfo, info(detail, note))
    return captured
end

---------------------------------------------------------------------------
-- Heuristic: accept a UDP payload only if its header is self-consistent:
-- version 2/3, kind 1..4, and a len that is exactly the rest of the datagram
-- and exactly the size of the kind's body (handshake 133/153, control 80/100,
-- data at least nonce + GCM tag = 28). A valid Data body also holds the
-- encrypted hb (>= 32/52), but Data between 28 and that is still taken, to be
-- shown as malformed: such datagrams are what crashes the Go peers (SPEC §6).
-- Trailing bytes after len, which Go ignores, are decoded on the configured
-- port and in an accepted conversation, but not guessed at by the heuristic.
---------------------------------------------------------------------------

local function looks_like_sudp(tvb)
    local wire = tvb:reported_len()
    if tvb:len() < HEADER_LEN then return false end
    local ver = tvb:range(0, 1):uint()
    local kind = tvb:range(1, 1):uint()
    local len = tvb:range(2, 2):uint()
    if not VERSIONS[ver] or not kind_names[kind] then return false end
    if HEADER_LEN + len ~= wire then return false end
    local want = expected_body_len(ver, kind)
    if want then return len == want end
    return len >= NONCE_LEN + GCM_TAG_LEN
end

local function heuristic(tvb, pinfo, tree)
    if not looks_like_sudp(tvb) then return false end
    -- Send the rest of this UDP conversation straight to SUDP, so that even
    -- its odd datagrams are shown (and flagged) as SUDP.
    pinfo.conversation = sudp
    sudp.dissector(tvb, pinfo, tree)
    return true
end

sudp:register_heuristic("udp", heuristic)

---------------------------------------------------------------------------
-- UDP port preference. Registering a port also makes SUDP a "Decode As" choice.
---------------------------------------------------------------------------

local udp_port_table = DissectorTable.get("udp.port")
local registered_port = 0

local function use_port(port)
    if port == registered_port then return end
    if registered_port ~= 0 then udp_port_table:remove(registered_port, sudp) end
    if port ~= 0 then udp_port_table:add(port, sudp) end
    registered_port = port
end

sudp.prefs.udp_port = Pref.uint("UDP port", DEFAULT_UDP_PORT,
    "UDP port decoded as SUDP (tunelo's default is 7000; 0 disables it). Other ports are "
    .. "found by the heuristic dissector or with Decode As.")

function sudp.prefs_changed()
    use_port(sudp.prefs.udp_port)
end

use_port(DEFAULT_UDP_PORT)
