"""Device list pages: the same devices, in the same order, as slicing the whole list."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session

from controlplane import crud
from controlplane.core.config import Settings
from controlplane.core.db import make_engine
from controlplane.db_models import Device
from models.protocol import utcnow
from tests.controlplane.rollouts.conftest import add_device


def test_pages_are_slices_of_the_filtered_list(cp_settings: Settings) -> None:
    engine = make_engine(cp_settings.database_url)
    enrolled = utcnow() - timedelta(days=1)
    with Session(engine) as session:
        for i in range(12):
            # ids against enrollment order, and ties on enrolled_at broken by id
            device_id = f"dev-{11 - i:02d}"
            add_device(session, device_id, labels={"site": "lab" if i % 3 else "shop"})
            device = session.get(Device, device_id)
            assert device is not None
            device.enrolled_at = enrolled + timedelta(minutes=i // 2)
            device.revoked_at = utcnow() if i == 7 else None
        session.commit()
        for where in (
            crud.DeviceFilter(),
            crud.DeviceFilter(labels={"site": "lab"}, include_revoked=False),
        ):
            whole = [d.id for d in crud.list_public_devices(session, where=where)]
            assert len(whole) == (12 if where.labels is None else 7)
            for limit, offset in ((3, 0), (3, 2), (5, 5), (4, 100)):
                page = crud.list_public_devices(session, where=where, limit=limit, offset=offset)
                assert [d.id for d in page] == whole[offset : offset + limit]
            rest = crud.list_public_devices(session, where=where, offset=4)
            assert [d.id for d in rest] == whole[4:]
    engine.dispose()
