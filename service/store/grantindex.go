package store

import (
	"cmp"
	"slices"
)

// grantList holds grants in Seq order. Grants are created with increasing
// Seqs, so adding one is an append; removing one leaves a hole, and the holes
// are squeezed out once they are half the list. Every change is O(log n)
// amortised, and a listing from a position starts with a binary search.
type grantList struct {
	slots []grantSlot
	holes int
}

type grantSlot struct {
	seq uint64
	g   *Grant // nil: removed
}

func (l *grantList) search(seq uint64) (int, bool) {
	return slices.BinarySearchFunc(l.slots, seq, func(s grantSlot, seq uint64) int { return cmp.Compare(s.seq, seq) })
}

func (l *grantList) add(g *Grant) {
	if n := len(l.slots); n == 0 || l.slots[n-1].seq < g.Seq {
		l.slots = append(l.slots, grantSlot{g.Seq, g})
		return
	}
	// Out of order: only a store whose sequence was reset could do this.
	if i, found := l.search(g.Seq); !found {
		l.slots = slices.Insert(l.slots, i, grantSlot{g.Seq, g})
	}
}

func (l *grantList) remove(seq uint64) {
	i, found := l.search(seq)
	if !found || l.slots[i].g == nil {
		return
	}
	l.slots[i].g = nil
	l.holes++
	if l.holes > 16 && 2*l.holes > len(l.slots) {
		kept := make([]grantSlot, 0, len(l.slots)-l.holes)
		for _, s := range l.slots {
			if s.g != nil {
				kept = append(kept, s)
			}
		}
		l.slots, l.holes = kept, 0
	}
}

func (l *grantList) size() int {
	if l == nil {
		return 0
	}
	return len(l.slots) - l.holes
}

// visit calls fn with the grants with Seq greater than after, in Seq
// order, at most budget of them, until fn returns false. It returns the Seq
// of the last grant visited and whether the walk is over (fn said stop, or
// the list ended); if not, the caller resumes after that Seq. A walk in
// bounded steps lets a caller drop its lock between them.
func (l *grantList) visit(after uint64, budget int, fn func(*Grant) bool) (last uint64, over bool) {
	if l == nil {
		return after, true
	}
	i, found := l.search(after)
	if found {
		i++
	}
	last = after
	for ; i < len(l.slots); i++ {
		g := l.slots[i].g
		if g == nil {
			continue
		}
		if budget == 0 {
			return last, false
		}
		budget--
		last = g.Seq
		if !fn(g) {
			return last, true
		}
	}
	return last, true
}

// keyGrants are one key's grants, indexed for every way they are looked up.
type keyGrants struct {
	byID      map[string]*Grant
	all       grantList
	byGrantee map[string]*grantList
	byRetry   map[string]*Grant // by RetryKey, for grants with a Name
}

// grantIndex is the in-memory index of every grant in the store.
type grantIndex struct {
	keys     map[string]*keyGrants
	retiring map[string]*grantList // every key's grants, by retiring principal
}

func newGrantIndex() grantIndex {
	return grantIndex{keys: make(map[string]*keyGrants), retiring: make(map[string]*grantList)}
}

func (x *grantIndex) of(keyID string) *keyGrants { return x.keys[keyID] }

func (kg *keyGrants) size() int {
	if kg == nil {
		return 0
	}
	return kg.all.size()
}

func (x *grantIndex) add(g *Grant) {
	kg := x.keys[g.KeyID]
	if kg == nil {
		kg = &keyGrants{byID: make(map[string]*Grant), byGrantee: make(map[string]*grantList), byRetry: make(map[string]*Grant)}
		x.keys[g.KeyID] = kg
	}
	kg.byID[g.ID] = g
	kg.all.add(g)
	listOf(kg.byGrantee, g.GranteePrincipal).add(g)
	if rk := g.RetryKey(); rk != "" && kg.byRetry[rk] == nil {
		kg.byRetry[rk] = g
	}
	if g.RetiringPrincipal != "" {
		listOf(x.retiring, g.RetiringPrincipal).add(g)
	}
}

func listOf(m map[string]*grantList, name string) *grantList {
	l := m[name]
	if l == nil {
		l = &grantList{}
		m[name] = l
	}
	return l
}

func unlist(m map[string]*grantList, name string, seq uint64) {
	if l := m[name]; l != nil {
		l.remove(seq)
		if l.size() == 0 {
			delete(m, name)
		}
	}
}

func (x *grantIndex) remove(g *Grant) {
	kg := x.keys[g.KeyID]
	if kg == nil || kg.byID[g.ID] != g {
		return
	}
	delete(kg.byID, g.ID)
	kg.all.remove(g.Seq)
	unlist(kg.byGrantee, g.GranteePrincipal, g.Seq)
	if rk := g.RetryKey(); rk != "" && kg.byRetry[rk] == g {
		delete(kg.byRetry, rk)
	}
	if g.RetiringPrincipal != "" {
		unlist(x.retiring, g.RetiringPrincipal, g.Seq)
	}
	if len(kg.byID) == 0 {
		delete(x.keys, g.KeyID)
	}
}

// removeKey drops every grant of a key.
func (x *grantIndex) removeKey(keyID string) {
	kg := x.keys[keyID]
	if kg == nil {
		return
	}
	for _, g := range kg.byID {
		if g.RetiringPrincipal != "" {
			unlist(x.retiring, g.RetiringPrincipal, g.Seq)
		}
	}
	delete(x.keys, keyID)
}
