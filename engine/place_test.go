package engine

import (
	"errors"
	"testing"

	"github.com/hotpatch/hotpatch/arch"
	"github.com/hotpatch/hotpatch/target"
)

func TestChooseBase(t *testing.T) {
	const reach = 1<<31 - 1
	img := target.Mapping{Start: 0x555500000000, End: 0x555500010000}
	heap := target.Mapping{Start: 0x555500100000, End: 0x555500200000, Path: "[heap]"}
	libc := target.Mapping{Start: 0x7f0000000000, End: 0x7f0000200000}
	maps := []target.Mapping{img, heap, libc}
	base, err := chooseBase(maps, img.Start, img.End, 0x3000, reach, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Just below the image, with the guard gap, page aligned.
	if base+0x3000 > img.Start-1<<16 || img.Start-base > 1<<20 || base%4096 != 0 {
		t.Errorf("base %#x not just below the image at %#x", base, img.Start)
	}
	// Never in the heap's growth reserve, even when below is full.
	full := append([]target.Mapping{{Start: 0x10000, End: img.Start}}, maps...)
	base, err = chooseBase(full, img.Start, img.End, 0x3000, reach, 0)
	if err != nil {
		t.Fatal(err)
	}
	if base >= heap.Start && base < heap.Start+heapReserve {
		t.Errorf("base %#x inside the heap reserve", base)
	}
	if base+0x3000-img.Start > reach {
		t.Errorf("base %#x out of reach", base)
	}
	// A 32-bit absolute patch must stay below 4 GiB.
	low := target.Mapping{Start: 0x400000, End: 0x402000}
	base, err = chooseBase([]target.Mapping{low}, low.Start, low.End, 0x2000, reach, 1<<32)
	if err != nil || base+0x2000 > 1<<32 {
		t.Errorf("non-PIC base %#x, %v", base, err)
	}
	// No hole: a clear error.
	if _, err := chooseBase([]target.Mapping{{Start: 0, End: 1 << 47}}, img.Start, img.End, 0x3000, reach, 0); !errors.Is(err, ErrNoSpace) {
		t.Errorf("want ErrNoSpace, got %v", err)
	}
}

func TestStateRecordRoundTrip(t *testing.T) {
	rec := &record{Gate: 1, Phase: phaseActive, Size: 0x5000, Applied: 42, Seq: 3, ID: "fix-1", BuildID: "abcd", Bias: 0x5555,
		CodeOff: 0x1000, CodeSize: 0x1000, Sites: []site{
			{Gated: true, Addr: 0x1234, New: 0x9999, NewSize: 30, Orig: []byte{1, 2, 3, 4, 5}, Tramp: []byte{0xe9, 1, 2, 3, 4}, Name: "compute"},
			{Addr: 0x2234, New: 0xaaaa, Orig: make([]byte, 14), Tramp: make([]byte, 14), Name: "a_very_long_function_name_that_will_be_truncated_somewhere"},
		}}
	got, err := decodeRecord(rec.encode())
	if err != nil {
		t.Fatal(err)
	}
	if got.Gate != 1 || got.Seq != 3 || got.ID != "fix-1" || len(got.Sites) != 2 || !got.Sites[0].Gated || got.Sites[1].Gated ||
		got.Sites[0].Name != "compute" || got.Sites[0].NewSize != 30 || len(got.Sites[1].Tramp) != 14 {
		t.Errorf("round trip: %+v", got)
	}
	b := rec.encode()
	b[8] = 99 // a future version
	if _, err := decodeRecord(b); !errors.Is(err, ErrBadState) {
		t.Errorf("future version: %v", err)
	}
	if _, err := decodeRecord(b[:100]); !errors.Is(err, ErrBadState) {
		t.Errorf("truncated: %v", err)
	}
}

// FuzzDecodeRecord: a state record read from a process is untrusted input.
func FuzzDecodeRecord(f *testing.F) {
	rec := &record{Gate: 1, Phase: phaseActive, ID: "x", Sites: []site{{Addr: 1, Orig: []byte{1}, Tramp: []byte{2}, Name: "f"}}}
	f.Add(rec.encode())
	f.Add([]byte(stateMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			return
		}
		for _, s := range r.Sites {
			if len(s.Orig) != len(s.Tramp) || len(s.Tramp) == 0 || len(s.Tramp) > maxSiteBytes {
				t.Fatalf("inconsistent site %+v", s)
			}
		}
	})
}

// TestVersionRanges: stacking over a gated site counts its stub as part of
// the version being replaced: a thread there is about to enter it.
func TestVersionRanges(t *testing.T) {
	for _, a := range []*arch.Arch{arch.AMD64, arch.ARM64} {
		const at, stub, fresh = 0x555500001000, 0x555400002000, 0x555400003000
		tramp, err := a.EncodeJump(at, stub, ^uint64(0))
		if err != nil {
			t.Fatal(err)
		}
		st := site{Gated: true, Addr: at, New: fresh, NewSize: 40, Tramp: tramp}
		got := versionRanges(a, "compute", "fix-1", st)
		if len(got) != 2 || got[0].Lo != fresh || got[0].Hi != fresh+40 || got[1].Lo != stub || got[1].Hi != stub+uint64(a.MaxStubLen) {
			t.Errorf("%s: gated site ranges %+v", a.Name, got)
		}
		st.Gated = false
		st.Tramp, _ = a.EncodeJump(at, fresh, ^uint64(0))
		if got := versionRanges(a, "compute", "fix-1", st); len(got) != 1 {
			t.Errorf("%s: direct site ranges %+v", a.Name, got)
		}
	}
}

// TestVersionRangesDirectStub: an ungated arm64 site of a function that
// starts with paciasp jumps to stub space holding `autiasp; B new`. A
// thread stopped at that B is about to enter the earlier version, and
// stacking must count it as inside.
func TestVersionRangesDirectStub(t *testing.T) {
	a := arch.ARM64
	const at, stub, fresh = 0x555500001004, 0x555400002000, 0x555400003000
	tramp, err := a.EncodeJump(at, stub, ^uint64(0))
	if err != nil {
		t.Fatal(err)
	}
	st := site{Gated: false, Addr: at, New: fresh, NewSize: 40, Tramp: tramp}
	got := versionRanges(a, "compute", "fix-1", st)
	inside := func(addr uint64) bool {
		for _, r := range got {
			if addr >= r.Lo && addr < r.Hi {
				return true
			}
		}
		return false
	}
	if !inside(fresh) || !inside(stub) || !inside(stub+4) {
		t.Errorf("direct site through a stub: ranges %+v miss the stub at %#x", got, uint64(stub))
	}
}
