"""Observing nights and site longitudes."""

from datetime import UTC, datetime, timedelta

from wisp.nights import night_of, site_longitude

MJD0 = datetime(1858, 11, 17, tzinfo=UTC)


def at(mjd: float) -> datetime:
    return MJD0 + timedelta(days=mjd)


def test_night_of() -> None:
    # La Silla (-70.73 deg): 2026-03-15T02:00 UT is 21:17 local on the 14th -> night of the 14th
    assert night_of(at(61114.08333333), -70.7346) == "2026-03-14"
    # 2026-03-15T16:00 UT is 11:17 local on the 15th, still before local noon -> night of the 14th
    assert night_of(at(61114.6666667), -70.7346) == "2026-03-14"
    assert night_of(at(61114.75), -70.7346) == "2026-03-15"  # 18:00 UT = 13:17 local
    # Siding Spring (+149 deg): 2026-03-14T12:00 UT is 21:56 local on the 14th
    assert night_of(at(61113.5), 149.06) == "2026-03-14"
    assert night_of(at(61113.0), 0.0) == "2026-03-13"  # midnight UT at Greenwich belongs to the previous night


def test_site_longitude_from_headers() -> None:
    assert site_longitude({"OBS-LONG": -70.7346}) == -70.7346
    assert abs(site_longitude({"SITELONG": "-96:27:11.8008"}) + 96.45328) < 1e-4
    assert site_longitude({"LONGITUD": 250.0}) == -110.0  # 0..360 east folded to -180..180
    assert site_longitude({}) == 0.0
