package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// The state record sits at the start of every patch mapping. Its layout is
// fixed and versioned: a later engine must read what an earlier one wrote.
//
//	0   magic "HPSTATE\x00"
//	8   u32 version
//	12  u32 phase (phasePrepared, phaseSwitching, phaseActive, phaseReverting)
//	16  u32 record size in bytes
//	20  u32 number of sites
//	24  u64 mapping size
//	32  u64 time applied, unix nanoseconds
//	40  u64 sequence number in the stack of patches of this process
//	48  [64]byte patch id, NUL padded
//	112 [64]byte target build-id (hex), NUL padded
//	176 u64 target image load bias
//	184 u64 offset of the code segment, u64 its size
//	200 [48]byte mapping name "hotpatch:<id>", NUL terminated
//	248 u8  gate: non-zero once the patch is switched in (see gateOffset)
//	256 u64 address of the patch's .eh_frame registered with the target's
//	        unwinder, 0 when none (version 2 on)
//	264 u64 address of the call frame (arch.CallFrame data, see unwind.go)
//	272 u64 address of the deregistration call stub, u64 its marker
//	288 u64 address of __deregister_frame_info in the target
//	320 sites, siteSize bytes each (256 in version 1)
const (
	stateMagic    = "HPSTATE\x00"
	stateVersion  = 2
	stateHdrSize  = 320
	v1HdrSize     = 256
	siteSize      = 96
	maxSiteBytes  = 16
	maxNameInSite = 40
)

const (
	phasePrepared  = 1
	phaseSwitching = 2
	phaseActive    = 3
	phaseReverting = 4
)

// ErrBadState means a state record in the target cannot be read.
var ErrBadState = errors.New("malformed patch state record in target")

// site is one redirected function entry.
//
//	0  u64 address of the old entry
//	8  u64 address of the new function
//	16 u32 size of the new function
//	20 u8  number of bytes replaced
//	21 u8  1 when the jump leads to a gated stub, 0 when straight to New
//	22 2 bytes padding
//	24 [16]byte bytes before this patch
//	40 [16]byte bytes this patch wrote
//	56 [40]byte function name, NUL padded
type site struct {
	Gated   bool
	Addr    uint64
	New     uint64
	NewSize uint32
	Orig    []byte
	Tramp   []byte
	Name    string

	directReason string // why the jump is not gated; not stored
}

type record struct {
	Gate     byte
	Phase    uint32
	Size     uint64
	Applied  int64
	Seq      uint64
	ID       string
	BuildID  string
	Bias     uint64
	CodeOff  uint64
	CodeSize uint64
	Unwind   unwindRecord
	Sites    []site
}

// unwindRecord says how to undo the registration of the patch's unwind
// tables; EHFrame is 0 when they were never registered.
type unwindRecord struct {
	EHFrame, CallData, DeregStub, DeregMarker, DeregFunc uint64
}

func recordSize(nsites int) uint64 { return uint64(stateHdrSize + nsites*siteSize) }

func putString(b []byte, s string) { copy(b, s) }

func getString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func mappingName(id string) string { return "hotpatch:" + id }

func (r *record) encode() []byte {
	b := make([]byte, recordSize(len(r.Sites)))
	le := binary.LittleEndian
	copy(b, stateMagic)
	le.PutUint32(b[8:], stateVersion)
	le.PutUint32(b[12:], r.Phase)
	le.PutUint32(b[16:], uint32(len(b)))
	le.PutUint32(b[20:], uint32(len(r.Sites)))
	le.PutUint64(b[24:], r.Size)
	le.PutUint64(b[32:], uint64(r.Applied))
	le.PutUint64(b[40:], r.Seq)
	putString(b[48:112], r.ID)
	putString(b[112:176], r.BuildID)
	le.PutUint64(b[176:], r.Bias)
	le.PutUint64(b[184:], r.CodeOff)
	le.PutUint64(b[192:], r.CodeSize)
	putString(b[200:247], mappingName(r.ID))
	b[gateOffset] = r.Gate
	le.PutUint64(b[256:], r.Unwind.EHFrame)
	le.PutUint64(b[264:], r.Unwind.CallData)
	le.PutUint64(b[272:], r.Unwind.DeregStub)
	le.PutUint64(b[280:], r.Unwind.DeregMarker)
	le.PutUint64(b[288:], r.Unwind.DeregFunc)
	for i, s := range r.Sites {
		o := b[stateHdrSize+i*siteSize:]
		le.PutUint64(o[0:], s.Addr)
		le.PutUint64(o[8:], s.New)
		le.PutUint32(o[16:], s.NewSize)
		o[20] = byte(len(s.Tramp))
		if s.Gated {
			o[21] = 1
		}
		copy(o[24:40], s.Orig)
		copy(o[40:56], s.Tramp)
		putString(o[56:56+maxNameInSite-1], s.Name)
	}
	return b
}

// nameOffset is where the mapping name string sits, for PR_SET_VMA_ANON_NAME.
const nameOffset = 200

// phaseOffset is where the phase word sits, rewritten on each transition.
const phaseOffset = 12

// gateOffset is the patch's gate byte. Every gated site's stub tests it:
// while it is zero the stub runs the old function's displaced first
// instructions and continues in the old body; once it is set, the stub
// jumps to the new function. Setting it is one single-byte write, so all
// gated functions switch together, even if the engine dies right after.
const gateOffset = 248

// headerSize is the record header's size in a given version.
func headerSize(version uint32) int {
	if version == 1 {
		return v1HdrSize
	}
	return stateHdrSize
}

func decodeHeader(b []byte) (nsites int, size uint32, err error) {
	if len(b) < v1HdrSize || string(b[:8]) != stateMagic {
		return 0, 0, ErrBadState
	}
	le := binary.LittleEndian
	v := le.Uint32(b[8:])
	if v == 0 || v > stateVersion {
		return 0, 0, fmt.Errorf("%w: version %d (this hotpatch reads up to %d; upgrade it)", ErrBadState, v, stateVersion)
	}
	n := le.Uint32(b[20:])
	size = le.Uint32(b[16:])
	if n > 1<<16 || uint64(size) != uint64(headerSize(v)+int(n)*siteSize) {
		return 0, 0, fmt.Errorf("%w: %d sites in %d bytes", ErrBadState, n, size)
	}
	return int(n), size, nil
}

func decodeRecord(b []byte) (*record, error) {
	n, size, err := decodeHeader(b)
	if err != nil {
		return nil, err
	}
	if uint32(len(b)) < size {
		return nil, fmt.Errorf("%w: truncated", ErrBadState)
	}
	le := binary.LittleEndian
	r := &record{
		Gate:     b[gateOffset],
		Phase:    le.Uint32(b[12:]),
		Size:     le.Uint64(b[24:]),
		Applied:  int64(le.Uint64(b[32:])),
		Seq:      le.Uint64(b[40:]),
		ID:       getString(b[48:112]),
		BuildID:  getString(b[112:176]),
		Bias:     le.Uint64(b[176:]),
		CodeOff:  le.Uint64(b[184:]),
		CodeSize: le.Uint64(b[192:]),
	}
	hdr := headerSize(le.Uint32(b[8:]))
	if hdr >= stateHdrSize {
		r.Unwind = unwindRecord{EHFrame: le.Uint64(b[256:]), CallData: le.Uint64(b[264:]),
			DeregStub: le.Uint64(b[272:]), DeregMarker: le.Uint64(b[280:]), DeregFunc: le.Uint64(b[288:])}
	}
	for i := 0; i < n; i++ {
		o := b[hdr+i*siteSize:]
		l := int(o[20])
		if l == 0 || l > maxSiteBytes {
			return nil, fmt.Errorf("%w: site %d replaces %d bytes", ErrBadState, i, l)
		}
		r.Sites = append(r.Sites, site{
			Gated:   o[21] == 1,
			Addr:    le.Uint64(o[0:]),
			New:     le.Uint64(o[8:]),
			NewSize: le.Uint32(o[16:]),
			Orig:    append([]byte(nil), o[24:24+l]...),
			Tramp:   append([]byte(nil), o[40:40+l]...),
			Name:    getString(o[56 : 56+maxNameInSite]),
		})
	}
	return r, nil
}

func phaseName(p uint32) string {
	switch p {
	case phasePrepared:
		return "prepared"
	case phaseSwitching:
		return "switching"
	case phaseActive:
		return "active"
	case phaseReverting:
		return "reverting"
	}
	return fmt.Sprintf("phase %d", p)
}

func truncName(s string) string {
	if len(s) >= maxNameInSite {
		return s[:maxNameInSite-1]
	}
	return strings.TrimSpace(s)
}
