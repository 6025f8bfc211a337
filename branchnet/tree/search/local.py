"""Local search over nested partitions (deterministic order; iterated with seeded kicks).

A move relabels task sets at one or several stages and always keeps the partitions
nested and the tree within the budget. The neighbourhood, in three tiers tried in turn:

1. single moves: a task leaves its groups from stage l down and follows another task u
   (of its stage-(l-1) group) for stages l..m-1, then stands alone; a stage-l group with
   its subtree follows a task r of a sibling group for stages l..m-1 (m = l+1 merges
   two siblings); a group moves under another parent; a group gets its own branch from
   a shallower stage;
2. swaps of two tasks' places from some stage down (same counts, for tight budgets);
3. pairs: one of the least harmful group-removing moves followed by the best
   group-adding move, which trades budget between stages.

A move is taken when it improves (dissimilarity, params, FLOPs, latency) in the order of
:func:`branchnet.tree.search.problem.better`; the search stops when no tier improves.
Because ``dissimilarity = sum_d S_d / k_d`` and a move changes each stage on its own,
a move's effect is a sum over stages of per-stage changes, so task and group moves are
scored for every (u, m) at once with numpy; ``S_d``, ``k_d`` and the group diameters
are kept up to date as moves are taken.
"""

from __future__ import annotations

import numpy as np

from branchnet.tree.search.problem import Problem, at_least, better, canonical_labels, within

FRESH = -1  # "a new group" as a move target


class LocalSearch:
    """Holds one tree (labels) with its per-stage group members, diameters, S_d and k_d."""

    def __init__(self, problem: Problem, labels: np.ndarray):
        self.p = problem
        self.labels = canonical_labels(np.asarray(labels, dtype=np.int64))
        self.depth, self.n = self.labels.shape
        self._stage_params = [float(v) for v in problem.stage_params]
        self._stage_flops = None if problem.stage_flops is None else [float(v) for v in problem.stage_flops]
        self._stage_latency = None if problem.stage_latency is None else [float(v) for v in problem.stage_latency]
        self._index()

    def _index(self) -> None:
        self.members: list[dict[int, np.ndarray]] = []
        self.diam: list[dict[int, float]] = []
        for d in range(self.depth):
            groups = {int(g): np.flatnonzero(self.labels[d] == g) for g in np.unique(self.labels[d])}
            self.members.append(groups)
            self.diam.append({g: self._diameter(d, idx) for g, idx in groups.items()})
        self.sums = [sum(self.diam[d].values()) for d in range(self.depth)]
        self.counts = [len(self.members[d]) for d in range(self.depth)]
        self.next_label = [int(self.labels[d].max()) + 1 for d in range(self.depth)]
        self.key = self._key(self.sums, self.counts)

    def _mask(self, x: np.ndarray) -> np.ndarray:
        """(N,) bool: membership of task set x."""
        mask = np.zeros(self.n, dtype=bool)
        mask[x] = True
        return mask

    def _diameter(self, d: int, idx: np.ndarray) -> float:
        return float(self.p.dist[d][idx[:, None], idx].max()) if len(idx) > 1 else 0.0

    def _key(self, sums: list[float], counts: list[int]) -> tuple[float, float, float, float]:
        diss = sum(s / k for s, k in zip(sums, counts))
        params = sum(k * c for k, c in zip(counts, self._stage_params)) + self.p.head_params
        flops = 0.0
        if self._stage_flops is not None:
            flops = sum(k * c for k, c in zip(counts, self._stage_flops)) + float(self.p.head_flops or 0.0)
        latency = 0.0
        if self._stage_latency is not None:
            latency = sum(k * c for k, c in zip(counts, self._stage_latency)) + float(self.p.head_latency or 0.0)
        return diss, params, flops, latency

    def _fits(self, key: tuple[float, float, float, float]) -> bool:
        p = self.p
        return ((p.max_params is None or within(key[1], p.max_params))
                and (p.min_params is None or at_least(key[1], p.min_params))
                and (p.max_flops is None or within(key[2], p.max_flops))
                and (p.max_latency is None or within(key[3], p.max_latency)))

    # -- evaluating a move -----------------------------------------------------------

    def _delta(self, steps: list[tuple[int, np.ndarray, int]]):
        """The effect of a move: ``steps`` lists (d, X, target), task set X (inside one group
        of stage d) joining group ``target`` (or a new one, FRESH) at stage d.

        Returns the new (sums, counts) and the group changes to commit, or None when the
        move changes nothing.
        """
        sums, counts = list(self.sums), list(self.counts)
        by_level: dict[int, list[tuple[np.ndarray, int]]] = {}
        for d, x, target in steps:
            if target != int(self.labels[d, x[0]]):
                by_level.setdefault(d, []).append((x, target))
        if not by_level:
            return None
        changes = []
        for d, moves in by_level.items():
            dist = self.p.dist[d]
            members, diam = self.members[d], self.diam[d]
            if len(moves) == 1:
                (x, target), = moves
                source = int(self.labels[d, x[0]])
                old = members[source]
                # the source group without X
                if len(x) == len(old):
                    changes.append((d, source, None, None))
                    sums[d] -= diam[source]
                    counts[d] -= 1
                else:
                    rest = old[old != x[0]] if len(x) == 1 else old[~self._mask(x)[old]]
                    before = diam[source]
                    if before > 0 and float(dist[x[:, None], old].max()) >= before:
                        after = self._diameter(d, rest)
                    else:
                        after = before
                    changes.append((d, source, rest, after))
                    sums[d] += after - before
                inner = self._diameter(d, x) if len(x) > 1 else 0.0
                if target == FRESH:
                    changes.append((d, -2, x, inner))
                    sums[d] += inner
                    counts[d] += 1
                else:
                    into = members[target]
                    after = max(diam[target], inner, float(dist[x[:, None], into].max()))
                    changes.append((d, target, np.concatenate([into, x]), after))
                    sums[d] += after - diam[target]
                continue
            # several moves at one stage (swaps): rebuild the touched groups
            groups: dict[int, np.ndarray] = {}
            fresh = -1
            for x, target in moves:
                source = int(self.labels[d, x[0]])
                if target == FRESH:
                    fresh -= 1
                    target = fresh
                old = groups.get(source, members[source])
                groups[source] = old[~self._mask(x)[old]]
                groups[target] = np.concatenate([groups.get(target, members.get(target, x[:0])), x])
            for g, idx in groups.items():
                if g in diam:
                    sums[d] -= diam[g]
                    counts[d] -= 1
                if len(idx):
                    after = self._diameter(d, idx)
                    sums[d] += after
                    counts[d] += 1
                    changes.append((d, g, idx, after))
                else:
                    changes.append((d, g, None, None))
        return sums, counts, changes

    def _commit(self, sums: list[float], counts: list[int], changes) -> None:
        for d, g, idx, after in changes:
            if idx is None:
                del self.members[d][g], self.diam[d][g]
                continue
            if g < 0:  # a group this move creates
                g = self.next_label[d]
                self.next_label[d] += 1
            self.members[d][g] = idx
            self.diam[d][g] = after
            self.labels[d, idx] = g
        self.sums, self.counts = sums, counts
        self.key = self._key(sums, counts)

    def _try(self, steps) -> bool:
        result = self._delta(steps)
        if result is None:
            return False
        sums, counts, changes = result
        key = self._key(sums, counts)
        if not self._fits(key) or not better(key, self.key) or key == self.key:
            return False
        self._commit(sums, counts, changes)
        return True

    # -- the neighbourhood -------------------------------------------------------------

    def _siblings(self, d: int, t: int) -> np.ndarray:
        """Tasks sharing t's group at stage d-1 (every task at stage 0)."""
        if d == 0:
            return np.arange(self.n)
        return self.members[d - 1][int(self.labels[d - 1, t])]

    def _stage_diameters(self, d: int) -> np.ndarray:
        """Diameter of every stage-d group, indexed by label."""
        diam = np.zeros(int(self.labels[d].max()) + 1)
        for g, value in self.diam[d].items():
            diam[g] = value
        return diam

    def _change(self, d: int, ds, dk):
        """Change of stage d's term S_d / k_d when S_d and k_d change by ds and dk."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self.sums[d] + ds) / (self.counts[d] + dk) - self.sums[d] / self.counts[d]

    def _task_table(self, t: int):
        """Per stage d: the change if task t joins the stage-d group of each task u
        (``follow`` (D, N), ``follow_k`` (D, N)) and if it stands alone (``alone``, ``alone_k`` (D,))."""
        depth, n = self.depth, self.n
        follow, follow_k = np.zeros((depth, n)), np.zeros((depth, n))
        alone, alone_k = np.zeros(depth), np.zeros(depth)
        for d in range(depth):
            dist, labels = self.p.dist[d], self.labels[d]
            own = int(labels[t])
            members = self.members[d][own]
            before = self.diam[d][own]
            if len(members) == 1:
                leave_s, leave_k = 0.0, -1
            else:
                rest = members[members != t]
                after = before if float(dist[t, members].max()) < before else self._diameter(d, rest)
                leave_s, leave_k = after - before, 0
            diam = self._stage_diameters(d)
            reach = np.zeros(len(diam))
            np.maximum.at(reach, labels, dist[t])
            join_s = np.maximum(diam, reach) - diam + leave_s
            join_k = np.full(len(diam), float(leave_k))
            join_s[own], join_k[own] = 0.0, 0.0
            follow[d] = self._change(d, join_s[labels], join_k[labels])
            follow_k[d] = join_k[labels]
            if len(members) > 1:
                alone[d], alone_k[d] = self._change(d, leave_s, 1), 1
        return follow, follow_k, alone, alone_k

    def _set_table(self, l: int, x: np.ndarray):
        """Per stage d: the change if task set x (a stage-l group with its subtree) joins the
        stage-d group of each task r outside x (``follow``, ``follow_k``, (D, N)). Above
        stage l, x is part of a larger group and leaves it; from stage l on, x's own groups
        are absorbed."""
        depth, n = self.depth, self.n
        follow, follow_k = np.zeros((depth, n)), np.zeros((depth, n))
        for d in range(depth):
            dist, labels = self.p.dist[d], self.labels[d]
            inner = self._diameter(d, x)
            if d < l:
                own = int(labels[x[0]])
                members = self.members[d][own]
                before = self.diam[d][own]
                if len(members) == len(x):
                    leave_s, leave_k, own_parts = -before, -1, [own]
                else:
                    rest = members[~self._mask(x)[members]]
                    after = before if float(dist[x[:, None], members].max()) < before else self._diameter(d, rest)
                    leave_s, leave_k, own_parts = after - before, 0, [own]
            else:
                own_parts = np.unique(labels[x])
                leave_s = -sum(self.diam[d][int(g)] for g in own_parts)
                leave_k = -len(own_parts)
            diam = self._stage_diameters(d)
            reach = np.zeros(len(diam))
            np.maximum.at(reach, labels, dist[x].max(axis=0))
            join_s = np.maximum(np.maximum(diam, inner), reach) - diam + leave_s
            join_k = np.full(len(diam), float(leave_k))
            join_s[own_parts], join_k[own_parts] = 0.0, 0.0  # staying put (only reachable above stage l)
            follow[d] = self._change(d, join_s[labels], join_k[labels])
            follow_k[d] = join_k[labels]
        return follow, follow_k

    def _path_moves(self, a: int, x: np.ndarray, follow, follow_k, alone=None, alone_k=None, min_end: int = 0):
        """Every move "x follows task r on stages [a, m), then stands alone (task moves) or
        keeps its own groups (set moves) on [m, D)" for m >= max(a + 1, min_end), with its
        (dissimilarity, params, flops, latency) change, as arrays over the candidates (r, m);
        r is any task outside x sharing x's stage-(a-1) group. For task moves, r = -1
        with m = a means x stands alone from stage a on."""
        depth, n = self.depth, self.n
        if alone is None:
            alone, alone_k = np.zeros(depth), np.zeros(depth)
        sp = np.asarray(self._stage_params)
        sf = np.asarray(self._stage_flops) if self._stage_flops is not None else np.zeros(depth)
        sl = np.asarray(self._stage_latency) if self._stage_latency is not None else np.zeros(depth)
        sib = np.ones(n, dtype=bool) if a == 0 else self.labels[a - 1] == self.labels[a - 1, x[0]]
        sib[x] = False
        users = np.flatnonzero(sib)
        cf = np.vstack([np.zeros((1, n)), np.cumsum(follow, axis=0)])
        ck = np.vstack([np.zeros((1, n)), np.cumsum(follow_k * sp[:, None], axis=0)])
        cfl = np.vstack([np.zeros((1, n)), np.cumsum(follow_k * sf[:, None], axis=0)])
        clt = np.vstack([np.zeros((1, n)), np.cumsum(follow_k * sl[:, None], axis=0)])
        tail = np.r_[np.cumsum(alone[::-1])[::-1], 0.0]
        tail_k = np.r_[np.cumsum((alone_k * sp)[::-1])[::-1], 0.0]
        tail_f = np.r_[np.cumsum((alone_k * sf)[::-1])[::-1], 0.0]
        tail_l = np.r_[np.cumsum((alone_k * sl)[::-1])[::-1], 0.0]
        gains, params, flops, lats, rs, ms = [], [], [], [], [], []
        if alone_k.any():
            gains.append([tail[a]]), params.append([tail_k[a]]), flops.append([tail_f[a]])
            lats.append([tail_l[a]]), rs.append([-1]), ms.append([a])
        for m in range(max(a + 1, min_end), depth + 1):
            if len(users):
                gains.append(cf[m, users] - cf[a, users] + tail[m])
                params.append(ck[m, users] - ck[a, users] + tail_k[m])
                flops.append(cfl[m, users] - cfl[a, users] + tail_f[m])
                lats.append(clt[m, users] - clt[a, users] + tail_l[m])
                rs.append(users), ms.append(np.full(len(users), m))
        if not gains:
            return (np.zeros(0),) * 4 + (np.zeros(0, np.int64),) * 2
        return (np.concatenate(gains), np.concatenate(params), np.concatenate(flops), np.concatenate(lats),
                np.concatenate(rs).astype(np.int64), np.concatenate(ms).astype(np.int64))

    def _best_of(self, gains, params, flops, lats):
        """Index of the best improving candidate within the budget, or None."""
        base = self.key
        for i in np.lexsort((params, gains)):
            key = (base[0] + float(gains[i]), base[1] + float(params[i]), base[2] + float(flops[i]),
                   base[3] + float(lats[i]))
            if not (better(key, base) and key != base):
                return None
            if self._fits(key):
                return int(i)
        return None

    def _path_steps(self, l: int, x: np.ndarray, r: int, m: int, alone_below: bool):
        steps = [s for d in range(l, m) for s in self._split_by_group(d, x, int(self.labels[d, r]))] if r >= 0 else []
        if alone_below:
            steps += [(d, x, FRESH) for d in range(m, self.depth)]
        return steps

    def _split_by_group(self, d: int, x: np.ndarray, target: int) -> list[tuple[int, np.ndarray, int]]:
        """Steps moving task set x to ``target`` at stage d, one per stage-d group x spans."""
        labels = self.labels[d, x]
        if (labels == labels[0]).all():
            return [(d, x, target)]
        return [(d, x[labels == g], target) for g in np.unique(labels)]

    def _task_moves(self) -> int:
        """For each task, take its best improving task move (if any)."""
        improved = 0
        for t in range(self.n):
            x = np.array([t])
            follow, follow_k, alone, alone_k = self._task_table(t)
            for l in range(self.depth):
                gains, params, flops, lats, rs, ms = self._path_moves(l, x, follow, follow_k, alone, alone_k)
                i = self._best_of(gains, params, flops, lats)
                if i is not None and self._try(self._path_steps(l, x, int(rs[i]), int(ms[i]), True)):
                    improved += 1
                    follow, follow_k, alone, alone_k = self._task_table(t)
        return improved

    def _set_candidates(self, l: int, h: int):
        """All set moves of the stage-l group h: (gains, params, flops, latencies, a, r, m) arrays."""
        x = self.members[l][h]
        follow, follow_k = self._set_table(l, x)
        out = []
        for a in range(l + 1):
            if a == l and l == self.depth:
                continue
            gains, params, flops, lats, rs, ms = self._path_moves(a, x, follow, follow_k, min_end=l)
            out.append((gains, params, flops, lats, np.full(len(gains), a), rs, ms))
        return tuple(np.concatenate(parts) for parts in zip(*out))

    def _group_follow_candidates(self):
        """(gain, params, flops, latency, l, h, a, r, m) of every set move that removes groups."""
        out = []
        for l in range(self.depth):
            for h in sorted(self.members[l]):
                gains, params, flops, lats, a_s, rs, ms = self._set_candidates(l, h)
                keep = np.flatnonzero(ms > l)  # absorbs at least x's stage-l group
                for i in keep:
                    out.append((float(gains[i]), float(params[i]), float(flops[i]), float(lats[i]), l, h,
                                int(a_s[i]), int(rs[i]), int(ms[i])))
        return out

    def _group_moves(self) -> int:
        """Set moves (best per group: follow a sibling's groups, or move under another parent),
        then branch moves (first improvement)."""
        improved = 0
        for l in range(self.depth):
            for h in sorted(self.members[l]):
                if h not in self.members[l]:
                    continue
                gains, params, flops, lats, a_s, rs, ms = self._set_candidates(l, h)
                i = self._best_of(gains, params, flops, lats)
                if i is not None:
                    x = self.members[l][h]
                    if self._try(self._path_steps(int(a_s[i]), x, int(rs[i]), int(ms[i]), False)):
                        improved += 1
        moves = self._branch_moves()
        i = 0
        while i < len(moves):
            if self._try(moves[i]):
                improved += 1
                moves = self._branch_moves()  # labels changed: rebuild the list, carry on from the same place
            i += 1
        return improved

    def _branch_moves(self) -> list[list[tuple[int, np.ndarray, int]]]:
        """A stage-m group with its subtree gets its own branch from stage l < m up to m-1."""
        out = []
        for m in range(1, self.depth):
            for c in sorted(self.members[m]):
                x = self.members[m][c]
                for l in range(m - 1, -1, -1):
                    if len(self.members[l][int(self.labels[l, x[0]])]) == len(x):
                        break  # alone from here up already
                    out.append([(d, x, FRESH) for d in range(l, m)])
        return out

    def _swap_moves(self) -> int:
        """t and a task v of another group exchange places from stage l down (same counts)."""
        improved = 0
        for t in range(self.n):
            x = np.array([t])
            for l in range(self.depth):
                for v in self._siblings(l, t):
                    v = int(v)
                    if v <= t or self.labels[l, v] == self.labels[l, t]:
                        continue
                    y = np.array([v])
                    steps = [s for d in range(l, self.depth)
                             for s in ((d, x, int(self.labels[d, v])), (d, y, int(self.labels[d, t])))]
                    if self._try(steps):
                        improved += 1
        return improved

    # -- pairs of moves that keep the budget: groups fewer somewhere, more elsewhere

    def _more_moves(self) -> list[list[tuple[int, np.ndarray, int]]]:
        """Moves that add groups: branch moves, and a task branching off alone."""
        out = self._branch_moves()
        for l in range(self.depth):
            for t in range(self.n):
                if len(self.members[l][int(self.labels[l, t])]) > 1:
                    out.append([(d, np.array([t]), FRESH) for d in range(l, self.depth)])
        return out

    def _snapshot(self):
        return (self.labels.copy(), [dict(m) for m in self.members], [dict(m) for m in self.diam],
                list(self.sums), list(self.counts), list(self.next_label), self.key)

    def _restore(self, snap) -> None:
        (self.labels, self.members, self.diam, self.sums, self.counts, self.next_label, self.key) = snap

    def _pair_pass(self, shortlist: int = 8) -> bool:
        """Pairs that trade groups between places: one of the ``shortlist`` least harmful
        group-removing set moves followed by the best group-adding move, or one of the
        ``shortlist`` most useful group-adding moves (even over budget) followed by the best
        group-removing move. Keeps the first pair that improves on the current tree."""
        start = self.key
        # fewer, then more
        fewer = [c for c in self._group_follow_candidates()
                 if self._fits((start[0] + c[0], start[1] + c[1], start[2] + c[2], start[3] + c[3]))]
        fewer.sort(key=lambda c: (c[0], c[1]) + c[4:])
        for _, _, _, _, l, h, a, r, m in fewer[:shortlist]:
            snap = self._snapshot()
            result = self._delta(self._path_steps(a, self.members[l][h], r, m, False))
            if result is None:
                continue
            self._commit(*result)
            best = None
            for more in self._more_moves():
                result = self._delta(more)
                if result is None:
                    continue
                key = self._key(result[0], result[1])
                if self._fits(key) and better(key, start) and key != start and (best is None or better(key, best[0])):
                    best = (key, result)
            if best is not None:
                self._commit(*best[1])
                return True
            self._restore(snap)
        # more (maybe over budget), then fewer
        more = []
        for i, steps in enumerate(self._more_moves()):
            result = self._delta(steps)
            if result is not None:
                more.append((self._key(result[0], result[1])[0], i, steps))
        more.sort(key=lambda c: (c[0], c[1]))
        for _, _, steps in more[:shortlist]:
            snap = self._snapshot()
            self._commit(*self._delta(steps))
            base = self.key
            best = None
            for gain, params, flops, latency, l, h, a, r, m in self._group_follow_candidates():
                key = (base[0] + gain, base[1] + params, base[2] + flops, base[3] + latency)
                if self._fits(key) and better(key, start) and key != start and (best is None or better(key, best[0])):
                    best = (key, (l, h, a, r, m))
            if best is not None:
                l, h, a, r, m = best[1]
                result = self._delta(self._path_steps(a, self.members[l][h], r, m, False))
                if result is not None:
                    key = self._key(result[0], result[1])
                    if self._fits(key) and better(key, start) and key != start:
                        self._commit(*result)
                        return True
            self._restore(snap)
        return False

    def kick(self, rng: np.random.Generator, moves: int) -> None:
        """Perturb the tree by ``moves`` random moves that fit the budget, whatever their effect.

        Each is, with equal chance, a swap of two tasks' places (same counts), a task
        branching off alone from some stage (more groups), or a task following another
        from some stage down (fewer groups or the same).
        """
        for _ in range(moves):
            t = int(rng.integers(self.n))
            l = int(rng.integers(self.depth))
            x = np.array([t])
            kind = int(rng.integers(3))
            if kind == 1:
                steps = [(d, x, FRESH) for d in range(l, self.depth)]
            else:
                others = [int(v) for v in self._siblings(l, t) if self.labels[l, v] != self.labels[l, t]]
                if not others:
                    continue
                v = others[int(rng.integers(len(others)))]
                if kind == 0:
                    y = np.array([v])
                    steps = [s for d in range(l, self.depth)
                             for s in ((d, x, int(self.labels[d, v])), (d, y, int(self.labels[d, t])))]
                else:
                    steps = [(d, x, int(self.labels[d, v])) for d in range(l, self.depth)]
            result = self._delta(steps)
            if result is not None and self._fits(self._key(result[0], result[1])):
                self._commit(*result)

    def run(self, max_passes: int = 50) -> np.ndarray:
        """Descend until no move improves (or ``max_passes``); returns canonical labels."""
        for _ in range(max_passes):
            if self._task_moves() + self._group_moves():
                continue
            if self._swap_moves() == 0 and not self._pair_pass():
                break
        return canonical_labels(self.labels)


def local_search(problem: Problem, labels: np.ndarray, max_passes: int = 50) -> np.ndarray:
    """The local optimum reached from ``labels`` (which must fit the budget)."""
    return LocalSearch(problem, labels).run(max_passes)


def iterated_local_search(problem: Problem, labels: np.ndarray, rounds: int, swaps: int = 3,
                          seed: int = 0, patience: int | None = None) -> np.ndarray:
    """Local search, then up to ``rounds`` times: kick the best tree with random moves,
    descend again, keep the result if it is better (iterated local search; seeded, so
    deterministic). Stops early after ``patience`` kicks in a row without improvement
    (default: never)."""
    rng = np.random.default_rng(seed)
    search = LocalSearch(problem, labels)
    best = search.run()
    best_key = search.key
    idle = 0
    for _ in range(rounds):
        search = LocalSearch(problem, best)
        search.kick(rng, swaps)
        candidate = search.run()
        if better(search.key, best_key) and search.key != best_key:
            best, best_key, idle = candidate, search.key, 0
        else:
            idle += 1
            if patience is not None and idle >= patience:
                break
    return best
