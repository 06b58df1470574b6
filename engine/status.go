package engine

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hotpatch/hotpatch/consistency"
	"github.com/hotpatch/hotpatch/target"
)

// found is a state record located in the target.
type found struct {
	base uint64
	rec  *record
}

// records finds every patch mapping of the process, by name where the
// kernel names anonymous mappings, else by the record's magic.
func (s *session) records() ([]found, error) {
	var out []found
	seen := map[uint64]bool{}
	prevName := ""
	for i, m := range s.maps {
		name := m.AnonName()
		candidate := false
		switch {
		case strings.HasPrefix(name, "hotpatch:"):
			// A patch mapping is split by protections; its record is in the first part.
			candidate = name != prevName
		case m.Path == "" && m.Inode == 0 && strings.HasPrefix(m.Perms, "r--"):
			candidate = true
		}
		prevName = name
		if !candidate || seen[m.Start] {
			continue
		}
		hdr := make([]byte, v1HdrSize)
		if _, err := s.p.ReadAt(hdr, m.Start); err != nil || !bytes.Equal(hdr[:8], []byte(stateMagic)) {
			continue
		}
		_, size, err := decodeHeader(hdr)
		if err != nil {
			return nil, fmt.Errorf("mapping at %#x: %w", m.Start, err)
		}
		full := make([]byte, size)
		if _, err := s.p.ReadAt(full, m.Start); err != nil {
			return nil, err
		}
		rec, err := decodeRecord(full)
		if err != nil {
			return nil, fmt.Errorf("mapping at %#x: %w", m.Start, err)
		}
		if err := checkExtent(rec, m.Start, uint64(size), anonEnd(s.maps[i:])); err != nil {
			return nil, fmt.Errorf("mapping at %#x: %w", m.Start, err)
		}
		seen[m.Start] = true
		out = append(out, found{base: m.Start, rec: rec})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].rec.Seq < out[j].rec.Seq })
	return out, nil
}

// anonEnd is where the run of adjacent anonymous mappings starting with
// maps[0] ends: the most a patch mapping at maps[0].Start can cover.
func anonEnd(maps []target.Mapping) uint64 {
	end := maps[0].End
	for _, m := range maps[1:] {
		if m.Start != end || m.Inode != 0 || (m.Path != "" && m.AnonName() != maps[0].AnonName()) {
			break
		}
		end = m.End
	}
	return end
}

// checkExtent checks the sizes and addresses of a record read from the
// target against the mapping it sits in: they decide what gets unmapped,
// which range counts as the patch's code, and where calls are made.
func checkExtent(rec *record, base, recSize, end uint64) error {
	if rec.Size < recSize || rec.Size > end-base {
		return fmt.Errorf("%w: size %#x outside its mapping (%#x bytes)", ErrBadState, rec.Size, end-base)
	}
	inside := func(off, n uint64) bool { return off <= rec.Size && n <= rec.Size-off }
	if !inside(rec.CodeOff, rec.CodeSize) {
		return fmt.Errorf("%w: code at %#x+%#x outside its mapping", ErrBadState, rec.CodeOff, rec.CodeSize)
	}
	if u := rec.Unwind; u.EHFrame != 0 {
		if u.CallData < base || u.DeregStub < base || u.DeregMarker < base ||
			!inside(u.CallData-base, callDataSize) || !inside(u.DeregStub-base, 1) || !inside(u.DeregMarker-base, 1) {
			return fmt.Errorf("%w: unwind call data outside its mapping", ErrBadState)
		}
	}
	return nil
}

// liveSites counts the sites whose running bytes are this patch's jump.
func (s *session) liveSites(r *record) int {
	n := 0
	for _, st := range r.Sites {
		cur := make([]byte, len(st.Tramp))
		if _, err := s.p.ReadAt(cur, st.Addr); err == nil && bytes.Equal(cur, st.Tramp) {
			n++
		}
	}
	return n
}

// collectStale unmaps patch mappings that no jump leads to: leftovers of an
// engine that died before switching or after reverting. The caller holds
// the process lock, so no other engine is preparing them.
func (s *session) collectStale(records []found, mods *consistency.Modules) error {
	for _, r := range records {
		// A jump leading into the mapping, or a set gate, means it is in use;
		// so does a jump a newer patch saved and puts back on revert.
		if s.liveSites(r.rec) > 0 || r.rec.Gate != 0 || s.chainedOverAny(records, r.rec) {
			continue
		}
		if s.registered(r.rec) {
			if err := s.deregister(r.rec, mods); err != nil {
				continue // registered tables must outlive nothing: leave it mapped
			}
		}
		if err := s.munmap(r.base, r.rec.Size); err != nil {
			return fmt.Errorf("remove stale patch mapping %s at %#x: %w", r.rec.ID, r.base, err)
		}
	}
	return nil
}

// PatchStatus describes one patch found in a process.
type PatchStatus struct {
	ID        string           `json:"id"`
	Sequence  uint64           `json:"sequence"`
	State     string           `json:"state"` // active, inactive, armed, partial
	Phase     string           `json:"phase"`
	Base      uint64           `json:"base"`
	Size      uint64           `json:"size"`
	BuildID   string           `json:"target_build_id"`
	Applied   time.Time        `json:"applied"`
	Functions []FunctionStatus `json:"functions"`
	// UnwindRegistered: the patch's unwind tables are known to the
	// target's unwinder, so exceptions pass through its code.
	UnwindRegistered bool `json:"unwind_registered"`
}

// FunctionStatus is one site of a patch.
type FunctionStatus struct {
	Name string `json:"name"`
	Old  uint64 `json:"old"`
	New  uint64 `json:"new"`
	Live bool   `json:"live"`
	// Gated functions switch together through the patch's gate byte.
	Gated bool `json:"gated"`
}

// Status reads the patches of pid from the process alone.
func Status(pid int) ([]PatchStatus, error) {
	s, err := openMaps(pid)
	if err != nil {
		return nil, err
	}
	defer s.close()
	records, err := s.records()
	if err != nil {
		return nil, err
	}
	out := []PatchStatus{}
	for _, r := range records {
		ps := PatchStatus{ID: r.rec.ID, Sequence: r.rec.Seq, Phase: phaseName(r.rec.Phase), Base: r.base, Size: r.rec.Size,
			BuildID: r.rec.BuildID, Applied: time.Unix(0, r.rec.Applied).UTC()}
		for _, st := range r.rec.Sites {
			ps.Functions = append(ps.Functions, FunctionStatus{Name: st.Name, Old: st.Addr, New: st.New, Live: s.siteLive(records, r.rec, st), Gated: st.Gated})
		}
		ps.State = s.state(records, r.rec)
		ps.UnwindRegistered = r.rec.Unwind.EHFrame != 0 && s.registered(r.rec)
		out = append(out, ps)
	}
	return out, nil
}

// siteLive reports whether st's jump is in place, directly or under a
// newer patch stacked on the same function.
func (s *session) siteLive(records []found, rec *record, st site) bool {
	cur := make([]byte, len(st.Tramp))
	if _, err := s.p.ReadAt(cur, st.Addr); err == nil && bytes.Equal(cur, st.Tramp) {
		return true
	}
	return s.chainedOver(records, rec, st)
}

// state names what a patch does in the process: "active" (every function
// switched), "inactive" (none), "armed" (gated jumps written but the gate
// clear: still the old behaviour, left by an engine that died before its
// commit point), or "partial" (gate set but a direct jump missing).
func (s *session) state(records []found, rec *record) string {
	live, direct, directLive := 0, 0, 0
	for _, st := range rec.Sites {
		l := s.siteLive(records, rec, st)
		if l {
			live++
		}
		if !st.Gated {
			direct++
			if l {
				directLive++
			}
		}
	}
	switch {
	case rec.Gate != 0 && live == len(rec.Sites):
		return "active"
	case rec.Gate != 0:
		return "partial"
	case directLive > 0:
		return "partial"
	case live > 0:
		return "armed"
	}
	return "inactive"
}

// chainedOverAny reports whether a newer record saved any of rec's jumps.
func (s *session) chainedOverAny(records []found, rec *record) bool {
	for _, st := range rec.Sites {
		if s.chainedOver(records, rec, st) {
			return true
		}
	}
	return false
}

// chainedOver reports whether a newer record's site at st.Addr saved st's
// jump as its original bytes.
func (s *session) chainedOver(records []found, rec *record, st site) bool {
	for _, r := range records {
		if r.rec.Seq <= rec.Seq {
			continue
		}
		for _, o := range r.rec.Sites {
			if o.Addr == st.Addr && bytes.Equal(o.Orig[:min(len(o.Orig), len(st.Tramp))], st.Tramp) {
				return true
			}
		}
	}
	return false
}

// RevertResult reports a revert.
type RevertResult struct {
	ID       string
	Pause    time.Duration
	Attempts int
}

// Revert removes patch id from pid. A patch with a newer patch stacked on
// one of its functions must wait for that one to be reverted first.
func Revert(ctx context.Context, pid int, id string, opts Options) (*RevertResult, error) {
	unlock, err := lock(pid)
	if err != nil {
		return nil, err
	}
	defer unlock()
	s, err := open(pid)
	if err != nil {
		return nil, err
	}
	defer s.close()
	s.limit = opts.timeout()
	records, err := s.records()
	if err != nil {
		return nil, err
	}
	return s.revert(ctx, records, id, opts)
}

// RevertAll removes every patch, newest first.
func RevertAll(ctx context.Context, pid int, opts Options) ([]*RevertResult, error) {
	unlock, err := lock(pid)
	if err != nil {
		return nil, err
	}
	defer unlock()
	s, err := open(pid)
	if err != nil {
		return nil, err
	}
	defer s.close()
	s.limit = opts.timeout()
	records, err := s.records()
	if err != nil {
		return nil, err
	}
	var out []*RevertResult
	for i := len(records) - 1; i >= 0; i-- {
		r, err := s.revert(ctx, records[:i+1], records[i].rec.ID, opts)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

func (s *session) revert(ctx context.Context, records []found, id string, opts Options) (*RevertResult, error) {
	var me *found
	for i := range records {
		if records[i].rec.ID == id {
			me = &records[i]
		}
	}
	if me == nil {
		return nil, fmt.Errorf("%s in pid %d: %w", id, s.pid, ErrNotApplied)
	}
	for _, st := range me.rec.Sites {
		cur := make([]byte, len(st.Tramp))
		if _, err := s.p.ReadAt(cur, st.Addr); err != nil {
			return nil, err
		}
		if bytes.Equal(cur, st.Tramp) || bytes.Equal(cur, st.Orig) {
			continue
		}
		for _, r := range records {
			if r.rec.Seq > me.rec.Seq {
				for _, o := range r.rec.Sites {
					if o.Addr == st.Addr {
						return nil, fmt.Errorf("%s: %w: revert %s first", id, ErrStacked, r.rec.ID)
					}
				}
			}
		}
		return nil, fmt.Errorf("%s: code at %s (%#x) was changed by something else; not reverting", id, st.Name, st.Addr)
	}
	res := &RevertResult{ID: id}
	ranges := []consistency.Range{{Lo: me.base + me.rec.CodeOff, Hi: me.base + me.rec.CodeOff + max(me.rec.CodeSize, 1), Name: "patch " + id}}
	mods := s.cfiModules()
	ar := &Result{}
	err := s.switchWhenIdle(ctx, opts.timeout(), mods, ranges, ar, func() error {
		return s.writeSites(me.base, me.rec, true)
	})
	res.Pause, res.Attempts = ar.Pause, ar.Attempts
	if err != nil {
		return nil, err
	}
	if err := s.deregister(me.rec, mods); err != nil {
		return res, fmt.Errorf("reverted, but the patch memory stays mapped: %w", err)
	}
	if err := s.munmap(me.base, me.rec.Size); err != nil {
		return res, fmt.Errorf("reverted, but unmapping patch memory failed (the next apply removes it): %w", err)
	}
	return res, nil
}
