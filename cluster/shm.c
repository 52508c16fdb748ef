/* SPDX-License-Identifier: MIT */
/* The cluster's shared memory: a header per worker and one ring per ordered pair of workers. */
#define _GNU_SOURCE /* memfd_create, F_ADD_SEALS */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "herald/status.h"
#include "shm.h"

#define PAGE 4096u
#define SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

/*
 * The region, every part at a page or cache-line boundary:
 *
 *   0                 superblock (one page): magic, version, sizes, offsets
 *   PAGE              nworkers worker headers of 128 bytes
 *   rings_off         N * (N - 1) rings of `stride` bytes: control block, then data
 *
 * Ring (from, to) is number from * (N - 1) + (to < from ? to : to - 1): the rings a worker
 * produces into are consecutive.
 */
typedef struct super_s {
    uint64_t magic;
    uint32_t version;
    uint32_t nworkers;
    uint64_t ring_size;
    uint64_t bytes;
    uint64_t rings_off;
    uint64_t stride;
} super_t;

_Static_assert(sizeof(hr_shm_worker_t) == 128, "worker header is two cache lines");

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) & ~(a - 1);
}

/* Fills `s` with the geometry for these sizes; the caller has checked them. */
static void geometry(super_t *s, unsigned nworkers, uint64_t ring_size)
{
    memset(s, 0, sizeof(*s));
    s->magic = HR_SHM_MAGIC;
    s->version = HR_SHM_VERSION;
    s->nworkers = nworkers;
    s->ring_size = ring_size;
    s->rings_off = align_up(PAGE + (uint64_t)nworkers * sizeof(hr_shm_worker_t), PAGE);
    s->stride = align_up(HR_RING_CTL_SIZE + ring_size, PAGE);
    s->bytes = s->rings_off + (uint64_t)nworkers * (nworkers - 1) * s->stride;
}

static int sizes_ok(uint64_t nworkers, uint64_t ring_size)
{
    return nworkers >= 1 && nworkers <= HR_SHM_MAX_WORKERS && ring_size >= HR_RING_MIN_SIZE &&
           ring_size <= HR_RING_MAX_SIZE && !(ring_size & (ring_size - 1));
}

int hr__shm_create(hr_shm_t *shm, unsigned nworkers, size_t ring_size)
{
    if (!shm)
        return HR_EINVAL;
    memset(shm, 0, sizeof(*shm));
    shm->fd = -1;
    if (ring_size == 0)
        ring_size = HR_SHM_RING_DEFAULT;
    if (!sizes_ok(nworkers, ring_size))
        return HR_EINVAL;
    super_t s;
    geometry(&s, nworkers, ring_size);
    if (s.bytes != (size_t)s.bytes || s.bytes > (uint64_t)INT64_MAX)
        return HR_EINVAL;

    int err;
    void *base = MAP_FAILED;
    /* No MFD_CLOEXEC: workers are exec'd with this fd number. */
    int fd = memfd_create("herald-rings", MFD_ALLOW_SEALING);
    if (fd < 0)
        return -errno;
    if (ftruncate(fd, (off_t)s.bytes) < 0 || fcntl(fd, F_ADD_SEALS, SEALS) < 0)
        goto fail;
    base = mmap(NULL, s.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED)
        goto fail;
    /* The file is zero-filled, which is every ring empty and every worker not waiting. */
    memcpy(base, &s, sizeof(s));
    shm->base = base;
    shm->bytes = s.bytes;
    shm->fd = fd;
    shm->nworkers = nworkers;
    shm->ring_size = (uint32_t)ring_size;
    return 0;

fail:
    err = -errno;
    close(fd);
    return err;
}

int hr__shm_map(hr_shm_t *shm, int fd)
{
    if (!shm)
        return HR_EINVAL;
    memset(shm, 0, sizeof(*shm));
    shm->fd = -1;
    if (fd < 0)
        return HR_EINVAL;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    /* A region that could shrink under us would turn reads into SIGBUS. */
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0)
        return errno == EINVAL ? HR_EPROTO : -errno;
    if ((seals & SEALS) != SEALS || (uint64_t)st.st_size < PAGE)
        return HR_EPROTO;
    void *base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED)
        return -errno;
    super_t got, want;
    memcpy(&got, base, sizeof(got));
    if (got.magic != HR_SHM_MAGIC || got.version != HR_SHM_VERSION ||
        !sizes_ok(got.nworkers, got.ring_size))
        goto bad;
    geometry(&want, got.nworkers, got.ring_size);
    if (memcmp(&got, &want, sizeof(got)) != 0 || want.bytes != (uint64_t)st.st_size)
        goto bad;
    shm->base = base;
    shm->bytes = (size_t)st.st_size;
    shm->nworkers = got.nworkers;
    shm->ring_size = (uint32_t)got.ring_size;
    return 0;

bad:
    munmap(base, (size_t)st.st_size);
    return HR_EPROTO;
}

void hr__shm_unmap(hr_shm_t *shm)
{
    if (!shm)
        return;
    if (shm->base)
        munmap(shm->base, shm->bytes);
    if (shm->fd >= 0)
        close(shm->fd);
    memset(shm, 0, sizeof(*shm));
    shm->fd = -1;
}

hr_shm_worker_t *hr__shm_worker(const hr_shm_t *shm, unsigned id)
{
    if (!shm || !shm->base || id >= shm->nworkers)
        return NULL;
    return (hr_shm_worker_t *)((uint8_t *)shm->base + PAGE) + id;
}

int hr__shm_ring(const hr_shm_t *shm, unsigned from, unsigned to, hr_ring_t *ring)
{
    if (!shm || !shm->base || !ring || from >= shm->nworkers || to >= shm->nworkers || from == to)
        return HR_EINVAL;
    super_t s;
    geometry(&s, shm->nworkers, shm->ring_size);
    uint64_t index = (uint64_t)from * (shm->nworkers - 1) + (to < from ? to : to - 1);
    uint8_t *mem = (uint8_t *)shm->base + s.rings_off + index * s.stride;
    return hr__ring_init(ring, mem, shm->ring_size, &hr__shm_worker(shm, to)->waiting);
}
